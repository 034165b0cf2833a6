"""Library code behind the command-line scripts in the repository's tools/."""
