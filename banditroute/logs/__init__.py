"""The decision log: row definitions, the writer and reader, the journal, replay and export."""
