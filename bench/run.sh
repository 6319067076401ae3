#!/usr/bin/env bash
# Fleet-scale benchmark of migrate-tenants against the one-psql-session floor.
#
#   bench/run.sh                       # N=1000 fresh tenants, NOOP_N=10000 up-to-date tenants
#   N=100 NOOP_N=500 bench/run.sh      # quick run
#   SWEEP="1 2 4 8" bench/run.sh       # also sweep --concurrency on the fresh apply
#   PHASES=sweep SWEEP="1 2 4 8" bench/run.sh   # only the sweep
#
# Environment:
#   N            fresh-apply tenants (default 1000)
#   NOOP_N       up-to-date tenants for the no-op phase (default 10000)
#   REPS         repetitions of every timed phase; the best is kept (default 1)
#   CONCURRENCY  passed as --concurrency to every tool run (default: the tool's own default)
#   SWEEP        space-separated concurrencies to sweep on the fresh apply at N
#   PHASES       subset of "fresh noop sweep pool multidb journal citus" (default: "fresh noop pool multidb", plus "sweep" when SWEEP is set)
#   MULTI_N      tenants per database of the multidb phase: 2 databases x MULTI_N vs 1 x 2*MULTI_N (default N/2)
#   CITUS_N      tenants of the citus phase (default 200)
#   CITUS_KIT    the Citus kit (build.sh, cluster.sh; default $ROOT/../shared/citus)
#   BENCH_CITUS_PORT, BENCH_CITUS_DIR  the citus phase's cluster: ports PORT..PORT+2 (default 56771),
#                data dir (default /tmp/mt-citus-bench); wiped at the end unless KEEP=1
#   POOL_N       checkouts per side in the pool phase (default 5000)
#   SETUP_JOBS   parallel psql sessions that create the no-op phase's tenants (default 4; untimed)
#   SKIP_BUILD=1 use the existing target/release/migrate-tenants (BIN=path overrides it)
#   KEEP=1       leave the bench cluster running (and the work directory) at the end
#   SHARED_BENCH the shared bench material (default: $ROOT/../shared/bench)
#   BENCH_PGDATA, BENCH_PGPORT  passed through to pg.sh
#
# The tool's binary is copied into a work directory once built, so a rebuild of
# target/ during the run does not change what is measured.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
SHARED=$(cd "$SHARED" && pwd)
PG="$SHARED/pg.sh"
GEN="$SHARED/gen-physical.py"
MIGS="$SHARED/workload/migrations"

N=${N:-1000}
NOOP_N=${NOOP_N:-10000}
REPS=${REPS:-1}
SWEEP=${SWEEP:-}
CONCURRENCY=${CONCURRENCY:-}
SETUP_JOBS=${SETUP_JOBS:-4}
RSS_SMALL=100
if [ -z "${PHASES:-}" ]; then
  PHASES="fresh noop pool multidb"
  [ -n "$SWEEP" ] && PHASES="$PHASES sweep"
fi
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

for f in "$PG" "$GEN" "$MIGS"; do
  [ -e "$f" ] || { echo "bench: missing $f (set SHARED_BENCH)" >&2; exit 2; }
done
NMIGS=$(find "$MIGS" -mindepth 1 -maxdepth 1 -type d | wc -l)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-mt.XXXXXX")

cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" = 1 ]; then
    echo "bench: KEEP=1: cluster left running ($("$PG" url)), work dir $WORK" >&2
  else
    "$PG" stop >/dev/null 2>&1 || true
    [ -n "${CITUS_STARTED:-}" ] && citus_cluster wipe >/dev/null 2>&1
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }
die() { log "bench: FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- cluster, build
log "== starting the bench cluster"
URL=$("$PG" start | tail -1)
PSQL=(psql -X -q -v ON_ERROR_STOP=1 "$URL")

if [ -n "${BIN:-}" ]; then
  SRC_BIN=$BIN
else
  SRC_BIN=$ROOT/target/release/migrate-tenants
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "== cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release"
  fi
fi
[ -x "$SRC_BIN" ] || die "no binary at $SRC_BIN"
TOOL=$WORK/migrate-tenants
cp "$SRC_BIN" "$TOOL"
TOOL_SHA=$(sha256sum "$TOOL" | cut -c1-12)
TOOL_VER=$("$TOOL" --version 2>/dev/null || echo '?')

# ---------------------------------------------------------------- helpers
# measure OUT -- CMD...: runs CMD (stdin/stdout/stderr as given by the caller) and writes
# "<wall ms> <max child RSS KB> <exit code> <child CPU ms (user+sys)>" to OUT.
measure() {
  local out=$1; shift; [ "$1" = -- ] && shift
  python3 - "$out" "$@" <<'PY'
import resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
rc = subprocess.run(cmd).returncode
ms = (time.perf_counter() - t0) * 1000
ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # ru_maxrss: KB on Linux
open(out, "w").write(f"{ms:.1f} {ru.ru_maxrss} {rc} {(ru.ru_utime + ru.ru_stime) * 1000:.0f}\n")
PY
}

# run_tool LABEL ARGS...: one measured run of the tool (from the work directory, so no
# .env or diesel.toml of the cwd applies, and with none of its env variables set); sets
# T_MS and T_RSS; its output goes to $WORK/LABEL.out.
run_tool() {
  local label=$1; shift
  local conc=()
  [ -n "$CONCURRENCY" ] && conc=(--concurrency "$CONCURRENCY")
  "$TOOL" --version >/dev/null   # page the binary in
  checkpoint
  (cd "$WORK" && measure "$WORK/m" -- env -u TENANTS -u TENANTS_QUERY -u TENANT_SCHEMA_PATTERN \
      -u MIGRATION_DIRECTORY -u MIGRATE_TENANTS_CONCURRENCY -u MIGRATE_TENANTS_CITUS -u MIGRATE_TENANTS_SESSION_SQL \
      -u RUST_LOG -u DATABASE_URL \
      "$TOOL" --database-url "${TOOL_URL:-$URL}" --migrations-dir "${TOOL_MIGS:-$MIGS}" "${conc[@]}" "$@" \
      >"$WORK/$label.out" 2>&1 </dev/null)
  read -r T_MS T_RSS T_RC T_CPU <"$WORK/m"
  if [ "$T_RC" != 0 ]; then
    log "--- $label: exit $T_RC; last lines of its output:"; tail -20 "$WORK/$label.out" >&2
    die "$label: migrate-tenants exited $T_RC"
  fi
}

# run_psql LABEL SQLFILE: measured single psql session; sets T_MS.
run_psql() {
  local label=$1 file=$2
  checkpoint
  measure "$WORK/m" -- "${PSQL[@]}" -f "$file" >"$WORK/$label.out" 2>&1 </dev/null
  read -r T_MS T_RSS T_RC T_CPU <"$WORK/m"
  [ "$T_RC" = 0 ] || { tail -20 "$WORK/$label.out" >&2; die "$label: psql exited $T_RC"; }
}

checkpoint() { "${PSQL[@]}" -c CHECKPOINT; }
reset_db() { "$PG" reset >/dev/null; }

tenants_file() {  # tenants_file COUNT PATH
  seq 1 "$1" | sed 's/^/t_/' >"$2"
}

# verify COUNT [MIGRATIONS [URL]]: every t_1..t_COUNT exists with exactly MIGRATIONS (default
# NMIGS) history rows, and no other t_ schema.
verify() {
  local count=$1 per=${2:-$NMIGS} psql=(psql -X -q -v ON_ERROR_STOP=1 "${3:-$URL}") schemas rows
  schemas=$("${psql[@]}" -tAc "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'")
  [ "$schemas" = "$count" ] || die "expected $count tenant schemas, found $schemas"
  # One SELECT per tenant in autocommit: a single query over thousands of tables would
  # exhaust a stock server's lock table.
  rows=$(seq 1 "$count" | awk '{printf "SELECT count(*) FROM t_%d.__diesel_schema_migrations;\n", $1}' \
         | "${psql[@]}" -tA | awk '{s+=$1} END {print s+0}')
  [ "$rows" = $((count * per)) ] || die "expected $((count * per)) history rows over $count tenants, found $rows"
}

min() { awk -v a="$1" -v b="$2" 'BEGIN {print (b == "" || a + 0 < b + 0) ? a : b}'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN {print (b == "" || a + 0 > b + 0) ? a : b}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.2f}" 'BEGIN {if (b + 0 == 0) print "n/a"; else printf f "\n", a / b}'; }
secs() { awk -v a="$1" 'BEGIN {printf "%.2f s", a / 1000}'; }

SUMMARY=()
summary() { SUMMARY+=("$(printf '%-54s %12s  %-26s %s' "$1" "$2" "$3" "$4")"); }
verdict() { awk -v r="$1" -v l="$2" 'BEGIN {if (r == "n/a") print "-"; else print (r + 0 <= l + 0) ? "PASS" : "FAIL"}'; }

# Other work on the machine skews every figure: show the load and CPU/IO pressure.
load() {
  local l; l="loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
  [ -r /proc/pressure/cpu ] && l="$l; cpu pressure avg60 $(awk -F'[ =]' '/^some/ {print $5}' /proc/pressure/cpu)%"
  [ -r /proc/pressure/io ] && l="$l; io pressure avg60 $(awk -F'[ =]' '/^some/ {print $5}' /proc/pressure/io)%"
  echo "$l"
}

# ---------------------------------------------------------------- machine
MACHINE=(
  "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  "host:     $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr)"
  "server:   $("${PSQL[@]}" -tAc 'SHOW server_version') (stock settings, fsync=$("${PSQL[@]}" -tAc 'SHOW fsync'), synchronous_commit=$("${PSQL[@]}" -tAc 'SHOW synchronous_commit'), max_locks_per_transaction=$("${PSQL[@]}" -tAc 'SHOW max_locks_per_transaction'))"
  "tool:     $TOOL_VER (binary sha256 $TOOL_SHA), concurrency ${CONCURRENCY:-default}"
  "workload: $NMIGS migrations from $MIGS; N=$N NOOP_N=$NOOP_N REPS=$REPS"
  "load at start: $(load)"
)
printf '%s\n' "${MACHINE[@]}"

GEN_SQL() { python3 "$GEN" "$@" "$MIGS"; }

# ---------------------------------------------------------------- 1. fresh apply
FLOOR_MS=
if has_phase fresh || has_phase sweep || has_phase journal; then
  tenants_file "$N" "$WORK/fresh.tenants"
  GEN_SQL "$N" migrate >"$WORK/floor-migrate.sql"
fi

if has_phase fresh; then
  echo
  echo "== fresh apply: $N new tenants x $NMIGS migrations (best of $REPS)"
  TOOL_MS= ; FRESH_RSS= ; PAIRED=
  for rep in $(seq 1 "$REPS"); do
    reset_db
    run_tool fresh-tool up -q --tenants-file "$WORK/fresh.tenants" --missing create
    verify "$N"
    log "   rep $rep tool:  $(secs "$T_MS"), tool CPU ${T_CPU} ms  ($(tail -1 "$WORK/fresh-tool.out"))"
    TOOL_MS=$(min "$T_MS" "$TOOL_MS"); FRESH_RSS=$(max "$T_RSS" "$FRESH_RSS"); REP_TOOL=$T_MS
    reset_db
    run_psql fresh-floor "$WORK/floor-migrate.sql"
    verify "$N"
    PAIRED="$PAIRED $(div "$REP_TOOL" "$T_MS")"
    log "   rep $rep floor: $(secs "$T_MS"); this rep's tool/floor $(div "$REP_TOOL" "$T_MS")"
    FLOOR_MS=$(min "$T_MS" "$FLOOR_MS")
  done
  R=$(div "$TOOL_MS" "$FLOOR_MS")
  printf '  migrate-tenants up       %10s  %7.2f ms/tenant  peak RSS %d KB\n' "$(secs "$TOOL_MS")" "$(div "$TOOL_MS" "$N" %.4f)" "$FRESH_RSS"
  printf '  floor (one psql session) %10s  %7.2f ms/tenant\n' "$(secs "$FLOOR_MS")" "$(div "$FLOOR_MS" "$N" %.4f)"
  printf '  ratio tool/floor         %10s  (best/best; per rep:%s)\n' "$R" "$PAIRED"
  summary "fresh apply, N=$N: tool / floor" "${R}x" "$(secs "$TOOL_MS") / $(secs "$FLOOR_MS")" "target <= 1.0x (aim 0.8x): $(verdict "$R" 1.0)"
  summary "fresh apply, N=$N: ms per tenant" "$(div "$TOOL_MS" "$N")" "floor $(div "$FLOOR_MS" "$N")" "per-rep ratios:$PAIRED"
  summary "fresh apply, N=$N: peak RSS" "${FRESH_RSS} KB" "" ""
fi

# ---------------------------------------------------------------- 2. no-op + RSS
if has_phase noop; then
  echo
  echo "== no-op: $NOOP_N up-to-date tenants (best of $REPS)"
  reset_db
  log "   creating $NOOP_N up-to-date tenants (gen-physical.py migrate1tx, $SETUP_JOBS psql sessions; untimed) ..."
  # The floor script's tenant blocks (each starts with CREATE SCHEMA) dealt round-robin
  # over SETUP_JOBS files, each with the script's header; one psql session per file.
  GEN_SQL "$NOOP_N" migrate1tx | awk -v jobs="$SETUP_JOBS" -v dir="$WORK" '
    BEGIN { t = -1 }
    /^CREATE SCHEMA IF NOT EXISTS / { t++ }
    t < 0 { for (j = 0; j < jobs; j++) print > (dir "/setup." j ".sql"); next }
    { print > (dir "/setup." (t % jobs) ".sql") }'
  setup_start=$(date +%s)
  pids=()
  for f in "$WORK"/setup.*.sql; do
    "${PSQL[@]}" -f "$f" >"$f.out" 2>&1 & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/setup.*.out >&2; die "creating the no-op tenants"; }; done
  log "   setup took $(( $(date +%s) - setup_start )) s"
  verify "$NOOP_N"
  rm -f "$WORK"/setup.*
  tenants_file "$NOOP_N" "$WORK/noop.tenants"
  tenants_file "$RSS_SMALL" "$WORK/small.tenants"
  GEN_SQL "$NOOP_N" noop >"$WORK/floor-noop.sql"
  "${PSQL[@]}" -c "VACUUM ANALYZE" >/dev/null 2>&1 || true
  P_MS= ; F_MS= ; N_MS= ; P_RSS= ; F_RSS= ; S_RSS= ; S_MS=
  for rep in $(seq 1 "$REPS"); do
    run_psql noop-floor "$WORK/floor-noop.sql";                          N_MS=$(min "$T_MS" "$N_MS")
    log "   rep $rep floor:   $(secs "$T_MS")"
    run_tool noop-pattern up -q --schema-pattern 't\_%';                 P_MS=$(min "$T_MS" "$P_MS"); P_RSS=$(max "$T_RSS" "$P_RSS")
    log "   rep $rep pattern: $(secs "$T_MS"), tool CPU ${T_CPU} ms  ($(tail -1 "$WORK/noop-pattern.out"))"
    run_tool noop-file up -q --tenants-file "$WORK/noop.tenants";        F_MS=$(min "$T_MS" "$F_MS"); F_RSS=$(max "$T_RSS" "$F_RSS")
    log "   rep $rep file:    $(secs "$T_MS"), tool CPU ${T_CPU} ms  ($(tail -1 "$WORK/noop-file.out"))"
    run_tool noop-small up -q --tenants-file "$WORK/small.tenants";      S_MS=$(min "$T_MS" "$S_MS"); S_RSS=$(max "$T_RSS" "$S_RSS")
  done
  verify "$NOOP_N"   # a no-op must not have changed anything
  RP=$(div "$P_MS" "$N_MS"); RF=$(div "$F_MS" "$N_MS"); RR=$(div "$(max "$P_RSS" "$F_RSS")" "$S_RSS")
  printf '  floor (one SELECT per tenant, one session) %10s  %7.3f ms/tenant\n' "$(secs "$N_MS")" "$(div "$N_MS" "$NOOP_N" %.4f)"
  printf '  up --schema-pattern  t\\_%%                  %10s  %7.3f ms/tenant  ratio %s  peak RSS %d KB\n' "$(secs "$P_MS")" "$(div "$P_MS" "$NOOP_N" %.4f)" "$RP" "$P_RSS"
  printf '  up --tenants-file                          %10s  %7.3f ms/tenant  ratio %s  peak RSS %d KB\n' "$(secs "$F_MS")" "$(div "$F_MS" "$NOOP_N" %.4f)" "$RF" "$F_RSS"
  printf '  up --tenants-file, %d tenants              %10s  peak RSS %d KB\n' "$RSS_SMALL" "$(secs "$S_MS")" "$S_RSS"
  printf '  RSS(%d) / RSS(%d)                        %10s\n' "$NOOP_N" "$RSS_SMALL" "$RR"
  summary "no-op, $NOOP_N tenants, --schema-pattern: tool/floor" "${RP}x" "$(secs "$P_MS") / $(secs "$N_MS")" "target <= 2x: $(verdict "$RP" 2)"
  summary "no-op, $NOOP_N tenants, --tenants-file: tool/floor" "${RF}x" "$(secs "$F_MS") / $(secs "$N_MS")" "target <= 2x: $(verdict "$RF" 2)"
  summary "peak RSS no-op: $NOOP_N / $RSS_SMALL tenants" "${RR}x" "$(max "$P_RSS" "$F_RSS") KB / $S_RSS KB" "target <= 1.5x: $(verdict "$RR" 1.5)"
fi

# ---------------------------------------------------------------- run journal overhead
# The same fresh apply and no-op with the journal (default) and with --no-journal, alternated.
if has_phase journal; then
  echo
  echo "== run journal: fresh apply of $N tenants and a no-op over them, with and without (best of $REPS)"
  J_MS= ; NJ_MS= ; JN_MS= ; NJN_MS=
  # journal_pair WITH(0|1): one fresh apply and one no-op, with or without the journal.
  journal_pair() {
    local flag=() label=journal
    [ "$1" = 0 ] && flag=(--no-journal) && label=nojournal
    reset_db
    run_tool "$label-fresh" up -q "${flag[@]}" --tenants-file "$WORK/fresh.tenants" --missing create
    if [ "$1" = 1 ]; then J_MS=$(min "$T_MS" "$J_MS"); else NJ_MS=$(min "$T_MS" "$NJ_MS"); fi
    run_tool "$label-noop" up -q "${flag[@]}" --tenants-file "$WORK/fresh.tenants"
    if [ "$1" = 1 ]; then JN_MS=$(min "$T_MS" "$JN_MS"); else NJN_MS=$(min "$T_MS" "$NJN_MS"); fi
    verify "$N"
  }
  for rep in $(seq 1 "$REPS"); do
    # The order alternates: the first run after a reset pays for the server's warm-up.
    if [ $((rep % 2)) = 1 ]; then journal_pair 1; journal_pair 0; else journal_pair 0; journal_pair 1; fi
  done
  RJ=$(div "$J_MS" "$NJ_MS"); RJN=$(div "$JN_MS" "$NJN_MS")
  printf '  fresh: journal %10s  no journal %10s  ratio %s\n' "$(secs "$J_MS")" "$(secs "$NJ_MS")" "$RJ"
  printf '  no-op: journal %10s  no journal %10s  ratio %s\n' "$(secs "$JN_MS")" "$(secs "$NJN_MS")" "$RJN"
  summary "journal overhead, fresh apply N=$N: with / without" "${RJ}x" "$(secs "$J_MS") / $(secs "$NJ_MS")" "target <= 1.15x: $(verdict "$RJ" 1.15)"
  summary "journal overhead, no-op N=$N: with / without" "${RJN}x" "$(secs "$JN_MS") / $(secs "$NJN_MS")" "target <= 1.3x: $(verdict "$RJN" 1.3)"
fi

# ---------------------------------------------------------------- 3. concurrency sweep
if has_phase sweep && [ -n "$SWEEP" ]; then
  echo
  echo "== concurrency sweep: fresh apply of $N tenants (best of $REPS; reps interleaved with a floor run)"
  SAVED_CONC=$CONCURRENCY
  # The sweep's ratios use the floor runs of the sweep itself (the machine's load drifts).
  declare -A BEST=() BRSS=()
  SWEEP_FLOOR=
  for rep in $(seq 1 "$REPS"); do
    reset_db
    run_psql fresh-floor "$WORK/floor-migrate.sql"
    verify "$N"
    log "   rep $rep floor:   $(secs "$T_MS")"
    SWEEP_FLOOR=$(min "$T_MS" "$SWEEP_FLOOR"); REP_FLOOR=$T_MS
    for c in $SWEEP; do
      CONCURRENCY=$c
      reset_db
      run_tool "sweep-$c" up -q --tenants-file "$WORK/fresh.tenants" --missing create
      verify "$N"
      log "   rep $rep c=$c: $(secs "$T_MS"), tool CPU ${T_CPU} ms, vs this rep's floor $(div "$T_MS" "$REP_FLOOR")"
      BEST[$c]=$(min "$T_MS" "${BEST[$c]:-}"); BRSS[$c]=$(max "$T_RSS" "${BRSS[$c]:-}")
    done
  done
  CONCURRENCY=$SAVED_CONC
  printf '  %-12s %10s  %10s  %8s  %10s\n' concurrency time ms/tenant vs-floor "peak RSS"
  printf '  %-12s %10s  %10.2f  %8s\n' "floor" "$(secs "$SWEEP_FLOOR")" "$(div "$SWEEP_FLOOR" "$N" %.4f)" "1.00"
  for c in $SWEEP; do
    R=$(div "${BEST[$c]}" "$SWEEP_FLOOR")
    printf '  %-12s %10s  %10.2f  %8s  %7d KB\n' "$c" "$(secs "${BEST[$c]}")" "$(div "${BEST[$c]}" "$N" %.4f)" "$R" "${BRSS[$c]}"
    summary "sweep, N=$N, --concurrency $c: tool / floor" "${R}x" "$(secs "${BEST[$c]}") / $(secs "$SWEEP_FLOOR")" "$(div "${BEST[$c]}" "$N") ms/tenant"
  done
fi

# ---------------------------------------------------------------- 4. tenant-scoped checkouts
if has_phase pool; then
  log
  log "== tenant-scoped checkouts (TenantPool): checkout + SELECT 1, plain r2d2 pool vs TenantPool"
  (cd "$ROOT" && cargo build --release --quiet -p sample-app) || die "cargo build -p sample-app"
  reset_db
  POOL_LINE=$("$ROOT/target/release/sample-app-serve" --database-url "$URL" --bench "${POOL_N:-5000}") \
    || die "sample-app-serve --bench"
  log "   $POOL_LINE"
  POOL_RATIO=$(sed -E 's/.*ratio ([0-9.]+).*/\1/' <<<"$POOL_LINE")
  summary "TenantPool checkout + SELECT 1 / plain checkout + SELECT 1" "${POOL_RATIO}x" "$(sed -E 's/.*plain ([0-9.]+ us), tenant-scoped ([0-9.]+ us).*/\2 \/ \1/' <<<"$POOL_LINE")" "4 round trips vs 2 (see README)"
fi

# ---------------------------------------------------------------- 5. several databases
# The overhead of the fleet mode (--fleet): the same 2*MULTI_N tenants as 2 databases of
# MULTI_N on the same server vs 1 database of 2*MULTI_N, same total --concurrency. Not a
# speed-up claim: both databases share the server and its 2 cores.
MULTI_N=${MULTI_N:-$((N / 2))}
DB2_URL=${URL%/*}/bench2

# count_t URL: the t_ schemas in that database.
count_t() {
  psql -X -q -tA "$1" -c "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_%'"
}

reset_db2() {
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS bench2 WITH (FORCE)" -c "CREATE DATABASE bench2" >/dev/null
}

# run_fleet LABEL ARGS...: like run_tool, with --fleet $WORK/fleet.toml instead of --database-url.
run_fleet() {
  local label=$1; shift
  local conc=()
  [ -n "$CONCURRENCY" ] && conc=(--concurrency "$CONCURRENCY")
  checkpoint
  (cd "$WORK" && measure "$WORK/m" -- env -u TENANTS -u TENANTS_QUERY -u TENANT_SCHEMA_PATTERN \
      -u MIGRATION_DIRECTORY -u MIGRATE_TENANTS_CONCURRENCY -u RUST_LOG -u DATABASE_URL \
      BENCH_ONE_URL="$URL" BENCH_TWO_URL="$DB2_URL" \
      "$TOOL" --fleet "$WORK/fleet.toml" --migrations-dir "$MIGS" "${conc[@]}" "$@" \
      >"$WORK/$label.out" 2>&1 </dev/null)
  read -r T_MS T_RSS T_RC T_CPU <"$WORK/m"
  if [ "$T_RC" != 0 ]; then
    log "--- $label: exit $T_RC; last lines of its output:"; tail -20 "$WORK/$label.out" >&2
    die "$label: migrate-tenants --fleet exited $T_RC"
  fi
}

if has_phase multidb; then
  echo
  echo "== several databases: 2 x $MULTI_N tenants (--fleet) vs 1 x $((2 * MULTI_N)) (best of $REPS)"
  seq 1 "$MULTI_N" | sed 's/^/t_/' >"$WORK/multi-one.tenants"
  seq $((MULTI_N + 1)) $((2 * MULTI_N)) | sed 's/^/t_/' >"$WORK/multi-two.tenants"
  tenants_file $((2 * MULTI_N)) "$WORK/multi-all.tenants"
  printf '[databases.one]\nurl_env = "BENCH_ONE_URL"\ntenants_file = "multi-one.tenants"\n\n[databases.two]\nurl_env = "BENCH_TWO_URL"\ntenants_file = "multi-two.tenants"\n' >"$WORK/fleet.toml"
  MF= ; MN= ; SF= ; SN=
  for rep in $(seq 1 "$REPS"); do
    reset_db; reset_db2
    run_fleet multi-fresh up -q --missing create;            MF=$(min "$T_MS" "$MF"); REP_MF=$T_MS
    [ "$(count_t "$URL")/$(count_t "$DB2_URL")" = "$MULTI_N/$MULTI_N" ] || die "multidb: expected $MULTI_N tenants in each database"
    run_fleet multi-noop up -q;                              MN=$(min "$T_MS" "$MN"); REP_MN=$T_MS
    reset_db; reset_db2
    run_tool single-fresh up -q --tenants-file "$WORK/multi-all.tenants" --missing create; SF=$(min "$T_MS" "$SF"); REP_SF=$T_MS
    verify $((2 * MULTI_N))
    run_tool single-noop up -q --tenants-file "$WORK/multi-all.tenants"; SN=$(min "$T_MS" "$SN")
    log "   rep $rep fresh: fleet $(secs "$REP_MF") vs one database $(secs "$REP_SF"); no-op: fleet $(secs "$REP_MN") vs $(secs "$T_MS")"
  done
  RF=$(div "$MF" "$SF"); RN=$(div "$MN" "$SN")
  printf '  fresh apply: 2 databases %10s   1 database %10s   ratio %s\n' "$(secs "$MF")" "$(secs "$SF")" "$RF"
  printf '  no-op up:    2 databases %10s   1 database %10s   ratio %s\n' "$(secs "$MN")" "$(secs "$SN")" "$RN"
  summary "fresh, 2 dbs x $MULTI_N (--fleet) / 1 db x $((2 * MULTI_N))" "${RF}x" "$(secs "$MF") / $(secs "$SF")" "fleet overhead"
  summary "no-op, 2 dbs x $MULTI_N (--fleet) / 1 db x $((2 * MULTI_N))" "${RN}x" "$(secs "$MN") / $(secs "$SN")" "fleet overhead"
  "${PSQL[@]}" -c "DROP DATABASE IF EXISTS bench2 WITH (FORCE)" >/dev/null
fi

# ---------------------------------------------------------------- 6. Citus vs plain PostgreSQL
# Per-tenant cost of a fresh apply: plain PostgreSQL with one round trip per migration
# (--citus off, the default there), plain PostgreSQL statement by statement (--citus on), and a
# 3-node Citus cluster (coordinator + 2 workers on this machine; detected, so statement by
# statement, tenants created as distributed schemas). Citus refuses the workload's migration 8
# (ALTER TABLE ... RENAME CONSTRAINT on a distributed table), so all three run migrations 1-7.
citus_cluster() { bash "$CITUS_KIT_DIR/cluster.sh" "$@"; }
if has_phase citus; then
  CN=${CITUS_N:-200}
  CITUS_KIT_DIR=${CITUS_KIT:-$ROOT/../shared/citus}
  echo
  echo "== citus: fresh apply of $CN tenants x 7 migrations: plain PostgreSQL (one round trip, statement by statement) vs Citus (best of $REPS)"
  if [ ! -f "$CITUS_KIT_DIR/cluster.sh" ]; then
    log "   NOTICE: no Citus kit at $CITUS_KIT_DIR (set CITUS_KIT): the citus phase was NOT run"
    summary "citus phase" "NOT RUN" "no Citus kit" ""
  else
    CITUS_KIT_DIR=$(cd "$CITUS_KIT_DIR" && pwd)
    CP=${BENCH_CITUS_PORT:-56771}
    export CITUS_COORDINATOR_PORT=$CP CITUS_WORKER1_PORT=$((CP + 1)) CITUS_WORKER2_PORT=$((CP + 2))
    export CITUS_CLUSTER_DIR=${BENCH_CITUS_DIR:-/tmp/mt-citus-bench}
    bash "$CITUS_KIT_DIR/build.sh" >"$WORK/citus-build.log" 2>&1 || { tail -20 "$WORK/citus-build.log" >&2; die "citus build.sh"; }
    citus_cluster wipe >/dev/null
    CITUS_STARTED=1
    citus_cluster start >"$WORK/citus-start.log" 2>&1 || { cat "$WORK/citus-start.log" >&2; die "citus cluster.sh start"; }
    CURL=$(citus_cluster urls)
    mkdir -p "$WORK/citus-migrations"
    find "$MIGS" -mindepth 1 -maxdepth 1 -type d | sort | head -7 | xargs -I{} cp -r {} "$WORK/citus-migrations/"
    tenants_file "$CN" "$WORK/citus.tenants"
    TRIGGERS="SET citus.enable_unsafe_triggers = on"
    B_MS= ; S_MS= ; C_MS= ; CNOOP_MS= ; PAIRED=
    for rep in $(seq 1 "$REPS"); do
      reset_db
      TOOL_MIGS=$WORK/citus-migrations run_tool citus-plain-batch up -q --tenants-file "$WORK/citus.tenants" --missing create --citus off
      verify "$CN" 7; B_MS=$(min "$T_MS" "$B_MS"); REP_B=$T_MS
      log "   rep $rep plain, one round trip:       $(secs "$T_MS"), tool CPU ${T_CPU} ms"
      reset_db
      TOOL_MIGS=$WORK/citus-migrations run_tool citus-plain-stmt up -q --tenants-file "$WORK/citus.tenants" --missing create --citus on
      verify "$CN" 7; S_MS=$(min "$T_MS" "$S_MS"); REP_S=$T_MS
      log "   rep $rep plain, statement by statement: $(secs "$T_MS"), tool CPU ${T_CPU} ms"
      # Untimed: drop the previous rep's tenants.
      TOOL_URL=$CURL TOOL_MIGS=$WORK/citus-migrations run_tool citus-drop tenant drop --yes --if-exists $(cat "$WORK/citus.tenants")
      TOOL_URL=$CURL TOOL_MIGS=$WORK/citus-migrations run_tool citus-citus up -q --tenants-file "$WORK/citus.tenants" --missing create --session-sql "$TRIGGERS"
      verify "$CN" 7 "$CURL"; C_MS=$(min "$T_MS" "$C_MS")
      DIST=$(psql -X -tA "$CURL" -c "SELECT count(*) FROM citus_schemas WHERE schema_name::text LIKE 't\_%'")
      [ "$DIST" = "$CN" ] || die "expected $CN distributed schemas, found $DIST"
      log "   rep $rep Citus (statement by statement): $(secs "$T_MS"), tool CPU ${T_CPU} ms; $DIST distributed schemas"
      TOOL_URL=$CURL TOOL_MIGS=$WORK/citus-migrations run_tool citus-noop up -q --tenants-file "$WORK/citus.tenants"
      CNOOP_MS=$(min "$T_MS" "$CNOOP_MS")
      PAIRED="$PAIRED $(div "$REP_S" "$REP_B")"
    done
    RS=$(div "$S_MS" "$B_MS"); RC=$(div "$C_MS" "$B_MS"); RCS=$(div "$C_MS" "$S_MS")
    printf '  plain PostgreSQL, one round trip per migration  %10s  %7.2f ms/tenant\n' "$(secs "$B_MS")" "$(div "$B_MS" "$CN" %.4f)"
    printf '  plain PostgreSQL, statement by statement         %10s  %7.2f ms/tenant  ratio %s (per rep:%s)\n' "$(secs "$S_MS")" "$(div "$S_MS" "$CN" %.4f)" "$RS" "$PAIRED"
    printf '  Citus, 3 nodes, statement by statement           %10s  %7.2f ms/tenant  ratio %s to one round trip, %s to statement by statement\n' "$(secs "$C_MS")" "$(div "$C_MS" "$CN" %.4f)" "$RC" "$RCS"
    printf '  Citus no-op up                                   %10s\n' "$(secs "$CNOOP_MS")"
    summary "citus, N=$CN x 7: plain stmt-by-stmt / one round trip" "${RS}x" "$(secs "$S_MS") / $(secs "$B_MS")" "per rep:$PAIRED"
    summary "citus, N=$CN x 7: Citus / plain one round trip" "${RC}x" "$(secs "$C_MS") / $(secs "$B_MS")" "$(div "$C_MS" "$CN") vs $(div "$B_MS" "$CN") ms/tenant"
    summary "citus, N=$CN x 7: Citus / plain stmt-by-stmt" "${RCS}x" "$(secs "$C_MS") / $(secs "$S_MS")" "no-op on Citus $(secs "$CNOOP_MS")"
  fi
fi

# ---------------------------------------------------------------- summary
echo
echo "== summary"
printf '%s\n' "${MACHINE[@]}"
echo "load at end:   $(load)"
printf '%-54s %12s  %-26s %s\n' figure value "tool / floor" target
printf '%s\n' "${SUMMARY[@]}"
