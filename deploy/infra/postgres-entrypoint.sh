#!/bin/sh
# PostgreSQL from Debian's package, started as the official image starts it: POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB are created on the first start of an empty PGDATA.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
bin=/usr/lib/postgresql/15/bin
# Debian's client wrappers would pick the package's own (unused) cluster: name the server's socket
export PGHOST=/run/postgresql PGPORT=5432
opts="-c port=5432 -c unix_socket_directories=/run/postgresql"
mkdir -p "$PGDATA" /run/postgresql && chown postgres:postgres "$PGDATA" /run/postgresql && chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  su postgres -c "$bin/initdb -D '$PGDATA' --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256" >/dev/null
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -c "$bin/pg_ctl -D '$PGDATA' -o \"$opts -c listen_addresses=''\" -w start" >/dev/null
  user="${POSTGRES_USER:-postgres}"
  verb=CREATE; [ "$user" = postgres ] && verb=ALTER
  su postgres -c "psql -v ON_ERROR_STOP=1 -q" <<SQL
$verb ROLE "$user" LOGIN SUPERUSER PASSWORD '${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}';
SQL
  [ "${POSTGRES_DB:-postgres}" = postgres ] || su postgres -c "createdb -O '${POSTGRES_USER:-postgres}' '$POSTGRES_DB'"
  su postgres -c "$bin/pg_ctl -D '$PGDATA' -m fast -w stop" >/dev/null
fi
exec su postgres -c "exec $bin/postgres -D '$PGDATA' $opts -c listen_addresses='*'"
