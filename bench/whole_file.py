"""A 50 MiB POST /upload with a whole-file rule loaded against the same upload without one
(issue 17): with the rule, the gateway streams every byte to the validator while it stores
them, and waits for the verdict after the last one; without, only the head goes. The rule
(bench/whole_file_rule.py) reads every byte and does nothing with it, so the difference is
the streaming's, clamd's own scanning aside. Where Debian's clamd is installed, a third row
runs the shipped ClamAV rule on a clamd of its own (tests/clamd.py), for information."""
from __future__ import annotations

import shutil
from pathlib import Path

from bench.common import MIB, Section, Service, met, percentile
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.upload import curl_upload, empty_dir, start_gateway, write_text
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE

SIZE = 50 * MIB
GOAL = 1.3
MB = 1_000_000


def _clamd():
    """A clamd of our own, or None where Debian's clamav-daemon is not installed."""
    from tests.clamd import Clamd, find_clamd
    from tests.conftest import free_port

    binary = find_clamd()
    if binary is None:
        return None
    clamd = Clamd(binary, free_port())
    clamd.start()
    return clamd


def run(workdir: Path, quick: bool) -> list[Section]:
    rounds = 3 if quick else 7
    area = workdir / "whole_file"
    area.mkdir(exist_ok=True)
    path = write_text(area / "big.txt", SIZE)
    small = write_text(area / "small.txt", 1024)
    clamd = _clamd()
    validators = {"without a whole-file rule": {},
                  "with a whole-file rule (reads every byte)": {"UPLOAD_PLUGINS": "bench.whole_file_rule"}}
    if clamd is not None:
        validators["with the ClamAV rule (clamd scanning too)"] = {"CLAMD_ADDRESS": clamd.unix, "CLAMD_TIMEOUT": "30"}
    services, gateways = [], {}
    try:
        thumbnailer = Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, area / "thumbnail.log")
        services.append(thumbnailer)
        for i, (label, env) in enumerate(validators.items()):
            validator = Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, area / f"validator{i}.log",
                                env=env)
            services.append(validator)
            # The verdict waits for clamd's scan of 50 MiB: give it room.
            gateways[label] = (start_gateway(validator, thumbnailer, area / f"data{i}", area / f"gateway{i}.log",
                                             VALIDATOR_TIMEOUT="60"), area / f"data{i}" / "files")
        times: dict[str, list[float]] = {label: [] for label in gateways}
        for label, (gateway, _) in gateways.items():
            curl_upload(gateway.url, small, "warm.txt")  # imports, connections, the policy
        for _ in range(rounds):
            for label, (gateway, files) in gateways.items():  # interleaved: the machine's drift hits all alike
                seconds, code, _ = curl_upload(gateway.url, path, "big.txt")
                if code != 201:
                    raise RuntimeError(f"{label}: POST /upload answered {code}")
                times[label].append(seconds)
                empty_dir(files)
    finally:
        for gateway, _ in gateways.values():
            gateway.stop()
        for service in services:
            service.stop()
        if clamd is not None:
            clamd.stop()
    shutil.rmtree(area)

    base = percentile(times["without a whole-file rule"], 50)
    section = Section("whole-file rules: a 50 MiB POST /upload, with every byte streamed to the validator",
                      ["validator", "p50 s", "MB/s", "x without", "goal", "met"])
    for label, samples in times.items():
        p50 = percentile(samples, 50)
        ratio = p50 / base
        goal = label.startswith("with a whole-file rule")
        section.rows.append([label, f"{p50:.3f}", f"{SIZE / p50 / MB:.0f}", f"{ratio:.2f}",
                             f"<= {GOAL}x" if goal else "-", met(ratio <= GOAL if goal else None)])
        section.data[label] = {"p50_s": round(p50, 4), "ratio": round(ratio, 3),
                               "samples_s": [round(s, 4) for s in samples]}
    section.notes.append(f"{rounds} rounds each, interleaved; curl -F to python -m gateway on this machine's disk.")
    if clamd is None:
        section.notes.append("No clamd here (apt-get install clamav-daemon): the ClamAV row is left out.")
    else:
        section.notes.append("The ClamAV row includes clamd's scan of 50 MiB after the last byte (tests' signatures).")
    return [section]
