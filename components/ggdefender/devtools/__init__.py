"""Developer-only tools (`ggdefender build`, `detect replay` and its plot): they run on a workstation or in CI,
never on a device, so the device artifact leaves this package out (build.EXCLUDED_DIRS) and the ggdefender
entry point says so when one is asked for there (cli.NOT_IN_ARTIFACT)."""
