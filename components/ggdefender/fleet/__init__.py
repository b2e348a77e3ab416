"""The fleet tier (not in the device artifact): code that runs in the customer's AWS account, never on a device.

act.py turns the fleet's violations into Security Hub findings and remediation (docs/fleet.md, "Acting on
violations"). Nothing in process A or B imports this package (tests/unit/test_process_layout.py).
"""
