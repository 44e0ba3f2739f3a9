"""The edges: each platform translates its events into ``assistant.envelope`` types here."""
