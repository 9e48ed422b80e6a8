"""The PostgreSQL backend's tables, their migrations and the roles' GRANTs (DESIGN §3.4).

Tables a DBA or a BI tool can query (the README documents them):

- `accounts`: one row per account: lineage, serial, name, next_user_id, updated_at,
  `settings` (JSON: the recording groups, members as user ids, and the time zone) and
  `mir_groups` (JSON: the MIR mirror's recording groups).
- `versions`: one row per version of an account (serial, lineage, name, when, who, which
  command, action counts, run_id): `crctl history`, and how a lost commit
  acknowledgement is resolved (run_id is unique). `settings`: the account's settings
  from that version on, NULL where unchanged since the previous version (a version's
  settings are those of the latest non-NULL row at or below its serial; none: the
  empty settings of a version-1 schema).
- `user_versions`: one row per version *of a user*: `record` (the user as JSON) is valid
  for serials `serial_from <= s < serial_to` (`serial_to` NULL: current). An apply writes
  rows only for the users it changes; any version of the account is reconstructable.
- `users` (view): the current users, one column per field.
- `cr_users` (view): the CR user list (account, username, full name, phone number,
  extension, product, status), as `crctl users` shows it.
- `mir_users`, `recordings`: the MIR mirror.
- `audit`: one row per applied action (the entry as JSON, and its main fields as columns).
- `tombstones`: terminated accounts, without personal data.
- `locks`: who holds which account's lock (readable by everyone).
- `schema_version`: the schema's version; a newer one than this crctl knows is refused.
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 2
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

DDL_V1 = """\
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version integer NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.accounts (
    account text PRIMARY KEY,
    lineage text NOT NULL,
    serial bigint NOT NULL,
    name text,
    next_user_id bigint NOT NULL,
    mirror_serial bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.versions (
    account text NOT NULL,
    serial bigint NOT NULL,
    lineage text NOT NULL,
    name text,
    next_user_id bigint NOT NULL,
    run_id text NOT NULL UNIQUE,
    time text NOT NULL,
    actor text NOT NULL,
    operation text NOT NULL,
    counts jsonb NOT NULL,
    PRIMARY KEY (account, serial)
);
CREATE TABLE IF NOT EXISTS {s}.user_versions (
    account text NOT NULL,
    user_id text NOT NULL,
    serial_from bigint NOT NULL,
    serial_to bigint,
    record jsonb NOT NULL,
    PRIMARY KEY (account, user_id, serial_from)
);
CREATE INDEX IF NOT EXISTS user_versions_current
    ON {s}.user_versions (account, user_id) WHERE serial_to IS NULL;
CREATE TABLE IF NOT EXISTS {s}.mir_users (
    account text NOT NULL,
    user_id text NOT NULL,
    entry jsonb NOT NULL,
    PRIMARY KEY (account, user_id)
);
CREATE TABLE IF NOT EXISTS {s}.recordings (
    account text NOT NULL,
    id text NOT NULL,
    user_id text,
    data jsonb NOT NULL,
    PRIMARY KEY (account, id)
);
CREATE TABLE IF NOT EXISTS {s}.audit (
    account text NOT NULL,
    seq bigserial,
    serial bigint,
    time text,
    actor text,
    operation text,
    action text,
    username text,
    user_id text,
    entry jsonb NOT NULL,
    PRIMARY KEY (account, seq)
);
CREATE TABLE IF NOT EXISTS {s}.tombstones (
    account text NOT NULL,
    lineage text NOT NULL,
    terminated_at text,
    entry jsonb NOT NULL,
    PRIMARY KEY (account, lineage)
);
CREATE TABLE IF NOT EXISTS {s}.locks (
    account text PRIMARY KEY,
    lock_id text NOT NULL,
    who text NOT NULL,
    operation text NOT NULL,
    pid integer,
    host text,
    ci_job_url text,
    since text NOT NULL,
    heartbeat timestamptz NOT NULL DEFAULT now(),
    session_key bigint NOT NULL,
    backend_pid integer NOT NULL
);
CREATE OR REPLACE VIEW {s}.users AS
    SELECT account, user_id, serial_from AS since_serial,
           record->>'username' AS username, record->>'first_name' AS first_name,
           record->>'last_name' AS last_name, record->>'email' AS email,
           record->>'extension' AS extension, record->>'phone_number' AS phone_number,
           record->>'profile' AS profile, record->>'location' AS location,
           record->'roles' AS roles,
           record->'call_recording'->>'product' AS cr_product,
           record->'call_recording'->>'status' AS cr_status,
           record->'call_recording'->>'activation_date' AS cr_activation_date,
           (record->'call_recording'->>'prevent_remove')::boolean AS cr_prevent_remove
    FROM {s}.user_versions WHERE serial_to IS NULL;
CREATE OR REPLACE VIEW {s}.cr_users AS
    SELECT account, username, first_name || ' ' || last_name AS full_name, phone_number,
           extension,
           CASE cr_product WHEN 'always-on' THEN 'MiCloud Connect MIR Always-On'
                           WHEN 'on-demand' THEN 'MiCloud Connect MIR On-Demand' END
               AS product,
           cr_status AS status
    FROM {s}.users WHERE cr_product IS NOT NULL;
"""

# Version 2: recording groups and the time zone (DESIGN §2 recording_groups,
# recording_settings) on accounts and their versions, and the MIR mirror's groups.
# Idempotent (IF NOT EXISTS): a migration re-run after any failure finds its work done.
DDL_V2 = """\
ALTER TABLE {s}.accounts ADD COLUMN IF NOT EXISTS settings jsonb NOT NULL DEFAULT '{{}}';
ALTER TABLE {s}.accounts ADD COLUMN IF NOT EXISTS mir_groups jsonb NOT NULL DEFAULT '{{}}';
ALTER TABLE {s}.versions ADD COLUMN IF NOT EXISTS settings jsonb;
"""

MIGRATIONS = {1: DDL_V1, 2: DDL_V2}

TABLES = ("accounts", "versions", "user_versions", "mir_users", "recordings", "audit",
          "tombstones", "locks", "schema_version")
ACCOUNT_TABLES = ("user_versions", "versions", "mir_users", "recordings", "audit",
                  "accounts")

GRANTS = """\
-- A reader (pull-request runners, BI tools): every reading command works with it.
CREATE ROLE crctl_reader NOLOGIN;
GRANT USAGE ON SCHEMA {s} TO crctl_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO crctl_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO crctl_reader;
-- A writer (the merge runner): apply, sync, terminate, force-unlock, migrate-state.
CREATE ROLE crctl_writer NOLOGIN;
GRANT USAGE ON SCHEMA {s} TO crctl_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO crctl_writer;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO crctl_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES
    TO crctl_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE ON SEQUENCES TO crctl_writer;
-- Termination vacuums the account's tables: the writer must own them (or run
-- `crctl init` and `terminate` as the owner). `force-unlock --force` ends a live
-- holder's session: pg_signal_backend lets the writer do it.
GRANT pg_signal_backend TO crctl_writer;
-- Log-in roles: CREATE ROLE ci_pr LOGIN IN ROLE crctl_reader;
--               CREATE ROLE ci_merge LOGIN IN ROLE crctl_writer;
"""


def quoted(schema: str) -> str:
    """The schema name as an SQL identifier (validated: no quoting games)."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(schema)
    return f'"{schema}"'


def ddl(schema: str) -> str:
    return "".join(MIGRATIONS[v].format(s=quoted(schema)) for v in sorted(MIGRATIONS))


def print_sql(schema: str) -> str:
    """What `crctl init --print-sql` prints: the DDL, then the roles' GRANTs."""
    return (f"-- crctl state schema, version {SCHEMA_VERSION}\nBEGIN;\n{ddl(schema)}"
            f"INSERT INTO {quoted(schema)}.schema_version (version) VALUES ({SCHEMA_VERSION});"
            f"\nCOMMIT;\n\n{GRANTS.format(s=quoted(schema))}")
