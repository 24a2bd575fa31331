"""draft service: Live drafts: actions in order, and a server stream of every change to watchers."""
