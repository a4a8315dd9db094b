"""Row 14's PgBouncer: Debian's, in transaction pooling mode in front of the bench's database, configured as README
"Behind PgBouncer" says (the statement timeout set by `connect_query` on each server connection it opens).

The bench's own small equivalent of tests/processes.py's helper (the bench does not import the tests): this module
writes the configuration and reads the admin console; bench/run.py starts and stops the process with its others."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import psycopg2

BINARY = Path("/usr/sbin/pgbouncer")
USER = "postgres"


def command(directory: Path, *, port: int, database: str, pool_size: int, statement_timeout_ms: int) -> list[str]:
    """Writes its files into `directory` and returns the command that runs it. PgBouncer refuses to run as root:
    then it runs as the `postgres` OS user, which must be able to enter `directory` (the caller's to arrange for
    the directories above it)."""
    directory.mkdir()
    (directory / "userlist.txt").write_text(f'"{USER}" ""\n')  # auth_type = trust still needs the user listed
    server = f"host=127.0.0.1 port=5432 dbname={database}"
    (directory / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = {server} connect_query='SET statement_timeout = {statement_timeout_ms}'\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'userlist.txt'}\nadmin_users = {USER}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
    )
    args = [str(BINARY), str(directory / "pgbouncer.ini")]
    if os.geteuid() != 0:
        return args
    os_user = pwd.getpwnam(USER)
    os.chown(directory, os_user.pw_uid, os_user.pw_gid)
    return ["runuser", "-u", os_user.pw_name, "--", *args]


def show(port: int, what: str) -> list[dict]:
    """`SHOW <what>` on its admin console (POOLS, SERVERS, STATS, ...), as rows of column: value."""
    connection = psycopg2.connect(host="127.0.0.1", port=port, user=USER, dbname="pgbouncer", connect_timeout=2)
    try:
        connection.autocommit = True  # the console knows no BEGIN
        with connection.cursor() as cursor:
            cursor.execute(f"SHOW {what}")
            columns = [column.name for column in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()


def answers(port: int) -> bool:
    try:
        show(port, "VERSION")
    except psycopg2.OperationalError:
        return False
    return True
