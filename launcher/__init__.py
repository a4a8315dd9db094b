"""What `make run` and `make test` do (`python -m launcher run|test`), with a PostgreSQL and a Redis of the
checkout's own when the machine runs none. Imports no app: it runs before there is a database to run them on."""
