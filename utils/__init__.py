"""Small helpers shared by two or more packages: errors, logging, URL masking."""
