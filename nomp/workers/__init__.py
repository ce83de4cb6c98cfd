"""Worker processes: the Stratum ports served by several processes on one machine."""
