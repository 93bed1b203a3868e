"""The built-in structure kinds, one per module: channel, embedding, head, group, block, branch. Each
finds its structures, gates them, plans their removal and replays its own edits
(:class:`sss.structures.registry.StructureKind`); importing a module registers its kind."""
