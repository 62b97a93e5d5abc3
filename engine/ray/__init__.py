"""Ray adapter: connect to (or start) Ray and move chunks of work to engine functions."""
