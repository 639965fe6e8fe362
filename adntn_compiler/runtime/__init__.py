"""What ships and runs: the `.adntn` artifact, the C bundle, their container (limits, checksums, signatures),
the sandbox that builds and emulates bundles, and the host checks a loader makes."""
