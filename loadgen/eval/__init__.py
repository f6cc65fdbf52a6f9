"""Quality evaluations run through the runtime and through other backends (`inloop eval ...`)."""
