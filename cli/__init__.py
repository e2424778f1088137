"""The `kupdate` command line (shipped as the import package `kupdate.cli`)."""
