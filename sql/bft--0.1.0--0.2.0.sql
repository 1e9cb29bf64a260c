-- bft 0.1.0 -> 0.2.0 (ALTER EXTENSION bft UPDATE TO '0.2.0').
-- Every change here is also in bft--0.2.0.sql; tests/scripts/test_upgrade.sh
-- checks that an updated 0.1.0 installation and a fresh 0.2.0 one have the
-- same catalog.
\echo Use "ALTER EXTENSION bft UPDATE TO '0.2.0'" to load this file. \quit
