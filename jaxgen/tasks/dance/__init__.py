"""Music-to-dance tasks: EDGE (`edge`), with their data in `dance_data`."""
