"""Every built-in tunable and timing of batchd, each with a line on what it bounds.

Operators' settings live in `settings.py` (with their defaults); what is here is fixed by
design: the sizes of the chunks that keep every Redis call short, and the timings of the loops.
"""

from __future__ import annotations

# -- Redis calls: each does work bounded by one of these, never by a list's or set's length ----

#: The most arguments (keys and values) one command may carry: managed Redis services refuse
#: more than 3,999 per command, and Redis reads a command whole before running it.
MAX_COMMAND_ARGS = 3_900
#: Requests one SUBMIT call stores at most (7 arguments each): 20 to 30 us of Redis each, so
#: one call holds Redis for a few milliseconds.
SUBMIT_CHUNK = 200
#: Bytes of params one SUBMIT call carries at most: Redis copies them into their keys and its
#: AOF at about 5 ms a megabyte, more while a rewrite's fork shares its memory.
SUBMIT_CHUNK_BYTES = 256 * 1024
#: Pending entries one CLAIM call takes by default (`batch.claim_chunk`), and at most (7
#: arguments each): about 7 us of Redis each, so a claim of 100,000 requests is 400 calls of
#: under 2 ms.
CLAIM_CHUNK = 250
CLAIM_CHUNK_MAX = 500
#: Result lines one FANOUT call applies at most (10 arguments each): about 17 us of Redis each,
#: so one call holds Redis for under 2 ms.
FANOUT_CHUNK = 100
#: Requests one MISSING, FAIL_ALL or UNCLAIM call handles at most (7 arguments each).
SWEEP_CHUNK = 500
#: Assembly entries read per round trip while streaming a batch body or sweeping an assembly.
ENTRY_CHUNK = 1_000
#: Reply-outbox entries one drain round moves at most.
DRAIN_CHUNK = 500
#: Reply queues (an account's most recent) a fan-out call may push onto directly, skipping the
#: outbox, where that is safe (one server, no replicas to wait for): 2 arguments each.
DIRECT_QUEUES = 32
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
#: Seconds a call keeps trying while a Redis Cluster answers that its slot is moving (TRYAGAIN
#: mid-migration) or that it is settling after a failover: nothing ran, so trying again is safe.
CLUSTER_SETTLE = 15.0
#: Seconds a process trusts what a master said of its replicas before a WAIT: long when it had
#: one (a WAIT that then times out only holds the step), short when it had none (a replica that
#: joins is waited for at once).
REPLICAS_RECHECK = 30.0
NO_REPLICAS_RECHECK = 1.0
#: Seconds between readings of Redis's clock (batchd's one clock) by each process.
CLOCK_CHECK = 10.0
#: Connections an asyncio client's pool opens at most; more concurrent calls wait for one.
ASYNC_POOL_SIZE = 100
#: Connections a sync client's pool opens at most; more threads wait for one.
SYNC_POOL_SIZE = 200
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
#: Seconds a submit stage waits for its account's create lock (another batch being created)
#: before it leaves the worker to other stages and comes back later (a second or two), and
#: seconds between its tries meanwhile. Most creates take well under a second.
CREATE_LOCK_WAIT = 1.5
CREATE_LOCK_POLL = 0.02
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
#: Days a day bucket may still grow after it starts (a fan-out writes the bucket of the hour it
#: started in, and runs at most JOB_TIMEOUTS["fanout"]); older ones are folded into the total.
LEDGER_FOLD_AFTER_DAYS = 2
#: Day buckets one FOLD call adds into the total at most.
LEDGER_FOLD_CHUNK = 32
#: How long a real-time usage record's id is remembered, so a retried record counts once (ms).
LEDGER_ONCE_MS = 86_400_000

# -- spend caps ----------------------------------------------------------------------------------

#: Bytes of stored params per input token, for a cut's cost estimate (no tokenizer at cut time).
ESTIMATE_BYTES_PER_TOKEN = 4
#: Output tokens assumed for a request whose record carries no `max_tokens` (an older record).
ESTIMATE_UNKNOWN_MAX_TOKENS = 4096
#: Head entries of a lane priced per round trip while a cut is checked against the caps.
ESTIMATE_CHUNK = 500
#: How long a lane's hold stays on record unless renewed by the next check (ms).
BUDGET_HOLD_MS = 60_000
#: How long an account's refusal of submits stays unless renewed by the next check (ms).
BUDGET_CLOSED_MS = 30_000
#: How long an estimate whose assembly does not exist (yet) counts: a cut reserves it first (ms).
BUDGET_RESERVE_GRACE_MS = 60_000
#: Seconds a producer caches which scopes refuse submits.
BUDGET_CHECK = 1.0

# -- fan-out completeness ----------------------------------------------------------------------

#: Times a results download that ended short of the batch's request counts is fetched again
#: before the requests without a line count as missing (and go round again).
RESULT_FETCHES = 4

# -- deadlines and the real-time route ---------------------------------------------------------

#: Batch durations kept per account (newest first) to plan deadlines by.
DURATION_SAMPLES = 200
#: Seconds a process reuses an account's batch-duration estimate before reading it again.
DURATION_REFRESH = 10.0
#: Pending deadline requests one planner pass reads per account (the nearest deadlines first).
PLAN_CHUNK = 500
#: Requests one ESCALATE or RT_SETTLE call handles at most (6 keys and up to 8 arguments each).
ESCALATE_CHUNK = 200
#: Batches with a deadline one planner pass looks at per account (the earliest first).
PLAN_BATCHES = 100
#: Real-time requests one RT_CLAIM call takes at most.
REALTIME_CLAIM_CHUNK = 64
#: Seconds between two reads of the real-time queues by a sender with nothing in hand.
REALTIME_IDLE = 0.2
#: Seconds of backoff after a real-time call the API answered with a retryable error and no
#: retry-after, doubled per attempt up to REALTIME_BACKOFF_MAX.
REALTIME_BACKOFF = 1.0
REALTIME_BACKOFF_MAX = 60.0
