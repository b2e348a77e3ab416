"""Process A (`ggdefender run`, may be root): the supervisor of process B, its relay server and the checks on what B
relays. The remediation listener, also process A's, is remediation/. docs/architecture.md."""
