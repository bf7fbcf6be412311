"""The catalogue of bad input: every entry point fed what it must refuse or survive, each case
named. Each gets a clear error or a terminal `rejected` result, and nothing else is harmed."""
