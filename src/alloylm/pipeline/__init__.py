"""Pipeline: YAML -> stage DAG -> run in order, skip what is built, record lineage."""
