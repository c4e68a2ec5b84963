"""The verbs, one module per verb, and what they share.

Each verb module holds DESCRIPTION, FLAGS (its flags as data: kubectl_wand.flags) and an Options class:
complete (from the parsed command line) -> validate -> run (streams in). Shared: ``common`` (the target flags and
options, target -> transports), ``fanout`` (one call on every pod at once), ``attach_session`` (attach's
foreground loop). Verbs talk to targets only through the transport interface (kubectl_wand.transport) and
never branch on which transport they hold.
"""
