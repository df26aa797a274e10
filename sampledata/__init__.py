"""Generated sample extracts with the real file's profile (`data generate`): the tool that makes the
shipped sample and the tests' data, not a stage of the ETL."""
