"""The chaos run: batchd replicas under a seeded nemesis, judged by a checker that trusts no
bookkeeping of batchd's. `python -m tests.chaos` (make chaos) runs it; test_chaos.py a small one."""
