"""Genesis: the file format, its validation, the initial state, and the devnet builder."""
