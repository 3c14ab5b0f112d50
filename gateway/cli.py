"""`flask --app gateway users ...`, `... tokens ...`: manage accounts from a shell;
`... db ...`: the schema's migrations; `... thumbnails backfill`: previews for files
stored before their renderer existed; `... events ...`: the events waiting for plugins (webhooks)."""
from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from gateway.metadata import migrate
from gateway.metadata.accounts import accounts
from gateway.metadata.files import repository
from gateway.metadata.outbox import outbox
from protos.errors import UploadError
from protos.text import human_size

users_cli = AppGroup("users", help="Create, list and delete users.")
tokens_cli = AppGroup("tokens", help="Create, list and revoke API tokens.")
db_cli = AppGroup("db", help="The database schema: migrations (they also run at every start).")
thumbnails_cli = AppGroup("thumbnails", help="Previews of stored files.")
events_cli = AppGroup("events", help="Events about files waiting for plugins and webhooks: what waits, what was given up.")


def _user(username: str):
    user = accounts().user_named(username)
    if user is None:
        raise click.ClickException(f"There is no user called {username!r}.")
    return user


def _fail(error: UploadError):
    raise click.ClickException(error.message)


@users_cli.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="An admin sees every file and manages users.")
@click.option("--password", is_flag=True, help="Ask for a password, for signing in from the browser.")
def create_user(username: str, admin: bool, password: bool):
    """Create a user and print their first API token (shown this once)."""
    secret = click.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    try:
        user = accounts().create_user(username, secret, admin)
    except UploadError as error:
        _fail(error)
    token, value = accounts().create_token(user.id, "first token")
    click.echo(f"Created {'admin ' if admin else ''}user {user.username} (id {user.id}).")
    click.echo(f"API token (id {token.id}), shown only now:\n{value}")


@users_cli.command("list")
def list_users():
    """Every user with their role and usage."""
    for user in accounts().list_users():
        files, size = repository().usage(user.id)
        role = "admin" if user.admin else "user"
        click.echo(f"{user.username}\t{role}\t{files} files\t{human_size(size)}\tid {user.id}")


@users_cli.command("delete")
@click.argument("username")
def delete_user(username: str):
    """Delete a user with their tokens, sessions and share links (their files stay, visible to admins)."""
    accounts().delete_user(_user(username).id)
    click.echo(f"Deleted user {username}.")


@users_cli.command("password")
@click.argument("username")
def set_password(username: str):
    """Set a user's password (signs their browsers out)."""
    user = _user(username)
    secret = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    try:
        accounts().set_password(user.id, secret)
    except UploadError as error:
        _fail(error)
    click.echo(f"Password set for {username}.")


@users_cli.command("quota")
@click.argument("username")
# The most each column holds (BigInteger, Integer) on every backend.
@click.option("--bytes", "quota_bytes", type=click.IntRange(min=0, max=2**63 - 1), default=None,
              help="Most bytes stored (0: unlimited); left out: unchanged.")
@click.option("--files", "quota_files", type=click.IntRange(min=0, max=2**31 - 1), default=None,
              help="Most files stored (0: unlimited); left out: unchanged.")
@click.option("--default", "to_default", is_flag=True,
              help="Back to USER_QUOTA_BYTES / USER_QUOTA_FILES for whatever is not given.")
def set_quota(username: str, quota_bytes: int | None, quota_files: int | None, to_default: bool):
    """Give a user their own quota, or show it when no option is given."""
    user = _user(username)
    if not to_default:
        quota_bytes = user.quota_bytes if quota_bytes is None else quota_bytes
        quota_files = user.quota_files if quota_files is None else quota_files
    accounts().set_quota(user.id, quota_bytes, quota_files)
    click.echo(f"Quota of {username}: bytes {quota_bytes if quota_bytes is not None else 'default'}, "
               f"files {quota_files if quota_files is not None else 'default'}.")


@tokens_cli.command("create")
@click.argument("username")
@click.option("--name", default="", help="A label to recognise the token by.")
def create_token(username: str, name: str):
    """Make an API token for a user and print it (shown this once)."""
    token, value = accounts().create_token(_user(username).id, name)
    click.echo(f"API token (id {token.id}) for {username}, shown only now:\n{value}")


@tokens_cli.command("list")
@click.argument("username", required=False)
def list_tokens(username: str | None):
    """Tokens (ids and labels, never the secrets), of one user or of all."""
    names = {u.id: u.username for u in accounts().list_users()}
    for token in accounts().list_tokens(_user(username).id if username else None):
        used = token.last_used_at.isoformat(timespec="seconds") if token.last_used_at else "never"
        click.echo(f"{token.id}\t{names.get(token.user_id, '?')}\t{token.name}\tlast used {used}")


@tokens_cli.command("revoke")
@click.argument("token_id")
def revoke_token(token_id: str):
    """Revoke a token by its id: it stops working at once."""
    if not accounts().revoke_token(token_id):
        raise click.ClickException(f"There is no token with id {token_id!r}.")
    click.echo(f"Revoked token {token_id}.")


@click.command("reconcile")
@click.option("--verify", is_flag=True, help="Also re-hash every stored file against its record (reads everything).")
@click.option("--dry-run", is_flag=True, help="Say what would be repaired; change nothing.")
@click.option("--orphan-age", type=float, default=None,
              help="Seconds after which leftovers count as orphans (default ORPHAN_AGE).")
@with_appcontext
def reconcile_command(verify: bool, dry_run: bool, orphan_age: float | None):
    """Make DATA_DIR and the records agree: remove temp files and bytes without a
    record, and records whose bytes are missing or damaged; report each."""
    from flask import current_app

    reconciler = current_app.extensions["reconciler"]
    if orphan_age is not None:
        reconciler = type(reconciler)(reconciler.storage, reconciler.repo, reconciler.tus, orphan_age)
    report = reconciler.run(verify=verify, dry_run=dry_run)
    click.echo(report.summary() + (" (dry run: nothing changed)" if dry_run and report.changed() else ""))
    for kind, names in vars(report).items():
        for name in names:
            click.echo(f"  {kind.replace('_', ' ')}: {name}")


@db_cli.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="The revision to bring the schema to.")
def db_upgrade(revision: str):
    """Migrate the schema (under the same lock as the start-up, so safe while the service runs).
    For a release step that migrates before new gateways start."""
    engine = repository().engine
    migrate.upgrade(engine, revision)
    click.echo(f"The database is at revision {migrate.current(engine)} (head {migrate.head()}).")


@db_cli.command("current")
def db_current():
    """The revision the database is at, and the one this version of the service needs."""
    click.echo(f"{migrate.current(repository().engine)} (head {migrate.head()})")


@thumbnails_cli.command("backfill")
@click.option("--include-failed", is_flag=True,
              help="Also try files whose thumbnail failed before (e.g. after a renderer was fixed).")
@click.option("--dry-run", is_flag=True, help="Count the files that would be rendered; change nothing.")
@click.option("--verbose", is_flag=True, help="One line per file.")
def thumbnails_backfill(include_failed: bool, dry_run: bool, verbose: bool):
    """Make thumbnails for stored files that have none although the thumbnail service now
    renders their type (a renderer added after they were stored). Safe to run while the
    gateway serves, and again: files that got a thumbnail meanwhile are left alone."""
    from flask import current_app

    def progress(row, outcome: str) -> None:
        if verbose:
            click.echo(f"  {row.id}\t{row.type}\t{outcome}")

    try:
        report = current_app.extensions["thumbnails"].backfill(include_failed, dry_run, progress)
    except UploadError as error:
        raise click.ClickException(f"The thumbnail service's renderers cannot be read: {error.message}") from None
    click.echo(report.summary() + (" (dry run: nothing changed)" if dry_run else ""))
    if report.stopped:
        raise click.ClickException(f"Stopped early: {report.stopped} Run the command again later for the rest.")


@events_cli.command("status")
def events_status():
    """Per plugin (a webhook is "webhook:<host>#<hash>"): events waiting, events given up,
    the oldest of each, and the last error."""
    from datetime import datetime, timezone

    from gateway.storage.expiry import duration

    stats = outbox().stats()
    waiting = {row.consumer for row in stats}
    now = datetime.now(timezone.utc)
    for name in outbox().subscribers():
        if name not in waiting:
            click.echo(f"{name}\tnothing waiting")
    for row in stats:
        age = duration(max(1, int((now - row.oldest).total_seconds())))
        line = f"{row.consumer}\t{row.count} {row.state}\toldest {age} old"
        error = outbox().last_error(row.consumer, row.state)
        click.echo(line + (f"\tlast error: {error}" if error else ""))


@events_cli.command("retry")
@click.option("--plugin", "consumer", default=None, help="Only this plugin's (as `events status` names it).")
def events_retry(consumer: str | None):
    """Offer the events given up (dead) again, now, with EVENT_GIVE_UP_AFTER counted afresh."""
    click.echo(f"{outbox().retry_dead(consumer)} event(s) will be offered again.")


@events_cli.command("drop")
@click.option("--plugin", "consumer", default=None, help="Only this plugin's (as `events status` names it).")
def events_drop(consumer: str | None):
    """Forget the events given up (dead)."""
    click.echo(f"{outbox().drop_dead(consumer)} event(s) dropped.")


def init_app(app: Flask) -> None:
    app.cli.add_command(events_cli)
    app.cli.add_command(db_cli)
    app.cli.add_command(thumbnails_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)
    app.cli.add_command(reconcile_command)
