"""Helpers shared by the test suites: a real server on its own thread
(`server`), raw API calls (`raw_api`), store helpers (`stores`), fuzzing
(`fuzz`), subprocess servers and workers for the fault tests (`procs`,
`fault_tasks`, `checker`) and the watcher-storm client."""
