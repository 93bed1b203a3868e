"""Budgets: a MAC, parameter or latency target instead of a γ. ``targets`` parses and checks
them, ``controller`` steers γ toward one and lands the selection inside its band, ``landing``
holds the landing strategies, ``magnitude`` the factors' start from trained weights."""
