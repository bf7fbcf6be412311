"""Every built-in tunable and timing of batchd, each with a line on what it bounds.

Operators' settings live in `settings.py` (with their defaults); what is here is fixed by
design: the sizes of the chunks that keep every Redis call short, and the timings of the loops.
"""

from __future__ import annotations

# -- Redis calls: each does work bounded by one of these, never by a list's or set's length ----

#: The most arguments (keys and values) one command may carry: managed Redis services refuse
#: more than 3,999 per command, and Redis reads a command whole before running it.
MAX_COMMAND_ARGS = 3_900
#: Requests one SUBMIT call stores at most (7 arguments each).
SUBMIT_CHUNK = 500
#: Bytes of params one SUBMIT call carries at most.
SUBMIT_CHUNK_BYTES = 8 * 1024 * 1024
#: Pending entries one CLAIM call takes at most (7 arguments each): a claim of 100,000 requests
#: is 200 short calls, none holding Redis for long.
CLAIM_CHUNK = 500
#: Result lines one FANOUT call applies at most (10 arguments each).
FANOUT_CHUNK = 380
#: Requests one MISSING, FAIL_ALL or UNCLAIM call handles at most (7 arguments each).
SWEEP_CHUNK = 500
#: Assembly entries read per round trip while streaming a batch body or sweeping an assembly.
ENTRY_CHUNK = 1_000
#: Reply-outbox entries one drain round moves at most.
DRAIN_CHUNK = 500
#: The most replies one `replies` round trip may take (and acknowledge together).
MAX_PREFETCH = 1_000
#: Webhook deliveries one claim takes at most.
WEBHOOK_CLAIM_CHUNK = 500

# -- Redis connections -------------------------------------------------------------------------

#: Seconds a Redis reply may take before the connection counts as dead.
SOCKET_TIMEOUT = 30.0
#: Seconds one blocking call (`wait`, `replies`) blocks at most, well inside SOCKET_TIMEOUT.
BLOCK_SECONDS = 20.0
#: Seconds a `wait` caller's mark on a request lasts: longer than any one blocking call, so a
#: request ending while it blocks always sees the mark (it is renewed before each call).
WAITER_SECONDS = 3 * BLOCK_SECONDS
#: Seconds between checks that a pooled connection is still alive.
HEALTH_CHECK_INTERVAL = 30
#: Seconds between readings of Redis's clock (batchd's one clock) by each process.
CLOCK_CHECK = 10.0
#: Connections an asyncio client's pool opens at most; more concurrent calls wait for one.
ASYNC_POOL_SIZE = 100
#: Seconds an asyncio call waits for a free pooled connection before it fails.
ASYNC_POOL_WAIT = 20.0
#: Seconds a producer caches the set of accounts the daemon serves.
ACCOUNTS_TTL = 60.0
#: `AsyncClient.wait` calls that take their first look at once, each on a pooled connection;
#: the rest queue for a turn, so thousands of concurrent waits stay within the pool's 100.
WAIT_FIRST_LOOKS = 32

# -- the pipeline ------------------------------------------------------------------------------

#: Fan-out chunks parsed and waiting for Redis at most (memory: a chunk is ~1 MB of results).
FANOUT_DEPTH = 4
#: Seconds an account stays paused after its API key was refused, before trying again.
PAUSE_SECONDS = 60.0
#: Unreadable results lines logged one by one per fan-out; the rest are only counted.
BAD_LINES_LOGGED = 5
#: Seconds a stage job may run before rq stops it; long ones renew their lease meanwhile.
JOB_TIMEOUTS = {"submit": 6 * 3600, "poll": 300, "fanout": 6 * 3600}
#: Seconds before a worker process that exited is started again; doubled for each failure in a
#: row (a Redis that is full or away kills them all), up to WORKER_RESTART_MAX.
WORKER_RESTART_DELAY = 2.0
WORKER_RESTART_MAX = 60.0
#: Seconds a worker must live for its next exit to count as a first failure again.
WORKER_STABLE = 60.0

# -- what is kept ------------------------------------------------------------------------------

#: Minutes of per-minute counter snapshots kept per account (throughput in `status`).
KEEP_MINUTES = 60
#: A `batchd run` whose heartbeat (every 0.5 s) is older than this counts as gone (ms).
PROCESS_ALIVE_MS = 10_000
#: Heartbeats older than this leave the registry (ms).
PROCESS_FORGET_MS = 3_600_000
#: How long a reply queue that got nothing still counts as one of its account's (ms).
QUEUE_SEEN_MS = 7 * 86_400_000

# -- the token ledger --------------------------------------------------------------------------

#: How long an hour bucket of the ledger is kept after its hour ends (ms).
LEDGER_HOUR_KEEP_MS = 8 * 86_400_000
#: How long a day bucket of the ledger is kept after its day ends (ms).
LEDGER_DAY_KEEP_MS = 400 * 86_400_000

# -- fan-out completeness ----------------------------------------------------------------------

#: Times a results download that ended short of the batch's request counts is fetched again
#: before the requests without a line count as missing (and go round again).
RESULT_FETCHES = 4
