"""The web console of `batchd run` (its "console" role): lanes, batches, requests, dead letters,
webhooks, paused accounts and daemons in a browser, live, with the operators' actions.

`server` listens and guards (`auth`); `views` reads what each page shows and `actions` does what
its buttons say, both through the store; `static/` holds the pages themselves.
"""
