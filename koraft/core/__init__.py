"""What every step shares: errors, params loading, JSON(L) files, hashes, text formats, measurements."""
