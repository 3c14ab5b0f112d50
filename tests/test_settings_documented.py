"""Every environment variable the services read is a row of the README's
settings table (or named in one, as boto3's AWS_DEFAULT_REGION fallback is)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The ways the code reads a setting: env.get("X"), env["X"], number("X", ...), flag("X", ...),
# env_int(env, "X", ...), os.environ.get("X"), os.getenv("X").
READS = re.compile(r'(?:env(?:iron)?(?:\.get)?\(\s*|env(?:iron)?\[|number\(|flag\(|env_int\(env, |getenv\()"([A-Z][A-Z0-9_]+)"')


def settings_read() -> set[str]:
    names = set()
    for package in ("gateway", "validator_service", "thumbnail_service", "protos"):
        for path in (ROOT / package).rglob("*.py"):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                names |= set(READS.findall(path.read_text()))
    return names


def settings_table() -> str:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Settings"):]
    return table[:table.index("\n## ", 1)]


def test_every_setting_the_code_reads_is_in_the_readme_settings_table():
    table = settings_table()
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", table, flags=re.M))
    names = settings_read()
    assert len(names) > 50, "the pattern no longer finds the settings"
    missing = sorted(name for name in names if name not in rows and f"`{name}`" not in table)
    assert not missing, f"read by the code but not in the README settings table: {missing}"
