"""The user interface of `ggdefender local`: the CLI, the live view, the control socket, the test harness."""
