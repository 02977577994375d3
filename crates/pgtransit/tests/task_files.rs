//! Task files: Pigsty's (from the seeds, addresses changed to loopback) and the native form.

use pgtransit::task::{to_native_yaml, Engine, Task, TaskSource};

/// `files/migration/pg-meta.yml` as Pigsty v2+ ships it, with loopback addresses.
const PIGSTY_V2: &str = r#"---
#-----------------------------------------------------------------
# PG_MIGRATION
#-----------------------------------------------------------------
context_dir: ~/migration  # Directory for migration manual & scripts
#-----------------------------------------------------------------
# SRC Cluster (Old Cluster)
#-----------------------------------------------------------------
src_cls: pg-meta      # Source cluster name                  <Required>
src_db: meta          # Source database name                 <Required>
src_ip: 127.0.0.10    # Source cluster primary IP            <Required>
#src_pg: ''            # If defined, use this as source dbsu pgurl instead of:
#sub_conn: ''          # If defined, use this as subscription connection string instead of:
#-----------------------------------------------------------------
# DST Cluster (New Cluster)
#-----------------------------------------------------------------
dst_cls: pg-test      # Destination cluster name             <Required>
dst_db: test          # Destination database name            <Required>
dst_ip: 127.0.0.11    # Destination cluster primary IP       <Required>
#dst_pg: ''            # If defined, use this as destination dbsu pgurl instead of:
#-----------------------------------------------------------------
# PGSQL
#-----------------------------------------------------------------
pg_dbsu: postgres
pg_replication_username: replicator
pg_replication_password: DBUser.Replicator
pg_admin_username: dbuser_dba
pg_admin_password: DBUser.DBA
pg_monitor_username: dbuser_monitor
pg_monitor_password: DBUser.Monitor
#-----------------------------------------------------------------
...
"#;

/// The older variables block of `pgsql-migration.yml` (v1), with its spellings.
const PIGSTY_V1: &str = r#"
# src cluster (the old cluster)
src_cls: pg-meta                       # src cluster name
src_db: meta                           # src database name
src_ip: 127.0.0.10                     # ip address of src cluster primary
src_list: [ ]                          # ip address list of src cluster members (non-primary)

# dst cluster (the new cluster)
dst_cls: pg-test                       # dst cluster name
dst_db: test                           # dst database name
dst_ip: 127.0.0.11                     # dst cluster leader ip addressh
dst_list: [ 127.0.0.12, 127.0.0.13 ]   # dst cluster members (non-primary)

# dst cluster access information
dst_dns: pg-test                       # dst cluster dns records
dst_vip: 127.0.0.3                     # dst cluster vip records

# credential (assume .pgpass viable)
pg_admin_username: dbuser_dba          # superuser @ both side
pg_replicatoin_username: replicator    # repl user @ src to be used
migration_context_dir: ~/migration     # this dir will be created
"#;

fn home() -> String {
    std::env::var("HOME").unwrap()
}

#[test]
fn pigsty_v2_file_resolves_like_pigsty() {
    let t = Task::parse(PIGSTY_V2, "pg-meta.yml").unwrap();
    assert_eq!(t.name, "pg-meta.meta");
    assert_eq!(t.engine, Engine::Native);
    // The raw strings Pigsty's set_fact builds, unchanged.
    assert_eq!(t.source.masked(), "postgresql://dbuser_dba@127.0.0.10/meta");
    assert_eq!(
        t.target.as_ref().unwrap().masked(),
        "postgresql://dbuser_dba@127.0.0.11/test"
    );
    assert_eq!(t.sub_conn, "host=127.0.0.10 dbname=meta user=replicator");
    assert_eq!(t.publication, "pub_pg_meta_meta");
    assert_eq!(t.subscription, "sub_pg_meta_meta");
    assert_eq!(t.slot, "sub_pg_meta_meta");
    assert_eq!(
        t.context_dir.display().to_string(),
        format!("{}/migration/pg-meta.meta", home())
    );
    // Pigsty never injects the passwords of the file into what it builds.
    assert!(t.source.password.is_none());
    assert!(!t.sub_conn.contains("DBUser"));
    match &t.origin {
        TaskSource::Pigsty(v) => {
            assert_eq!(v.pg_monitor_username.as_deref(), Some("dbuser_monitor"))
        }
        other => panic!("expected a Pigsty task, got {other:?}"),
    }
}

#[test]
fn pigsty_v1_spellings_are_accepted() {
    let t = Task::parse(PIGSTY_V1, "pgsql-migration.yml").unwrap();
    assert_eq!(t.replication_user, "replicator");
    assert_eq!(t.sub_conn, "host=127.0.0.10 dbname=meta user=replicator");
    assert_eq!(
        t.context_dir.display().to_string(),
        format!("{}/migration/pg-meta.meta", home())
    );
    match &t.origin {
        TaskSource::Pigsty(v) => {
            assert_eq!(v.dst_vip.as_deref(), Some("127.0.0.3"));
            assert_eq!(v.dst_list.as_ref().unwrap().len(), 2);
        }
        other => panic!("expected a Pigsty task, got {other:?}"),
    }
}

#[test]
fn pigsty_overrides_are_used_verbatim() {
    let text = PIGSTY_V2.replace(
        "#src_pg: ''",
        "src_pg: 'postgres://dbuser_dba:DBUser.DBA@127.0.0.10:5433/meta'\nsub_conn: 'host=127.0.0.10 port=5433 dbname=meta user=replicator password=DBUser.Replicator'\ndst_pg: 'postgres://admin@127.0.0.11:6432/test'",
    );
    let t = Task::parse(&text, "x.yml").unwrap();
    assert_eq!(t.source.port(), 5433);
    assert_eq!(t.source.password.as_ref().unwrap().expose(), "DBUser.DBA");
    assert_eq!(
        t.sub_conn,
        "host=127.0.0.10 port=5433 dbname=meta user=replicator password=DBUser.Replicator"
    );
    assert_eq!(t.target.unwrap().user(), "admin");
}

#[test]
fn misspelt_key_names_line_and_suggests() {
    let text = PIGSTY_V2.replace("dst_ip: 127.0.0.11", "dst_ipp: 127.0.0.11");
    let e = Task::parse(&text, "pg-meta.yml").unwrap_err();
    assert_eq!(e.line, Some(19), "{e}");
    assert!(e.message.contains("dst_ipp"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean `dst_ip`?"));
    let shown = e.to_string();
    assert!(
        shown.starts_with("task file pg-meta.yml, line 19:"),
        "{shown}"
    );
}

#[test]
fn missing_required_field_is_named() {
    let text = PIGSTY_V2.replace("src_db: meta", "");
    let e = Task::parse(&text, "f.yml").unwrap_err();
    assert!(e.message.contains("`src_db` is required"), "{e}");
}

#[test]
fn bad_value_is_reported_with_its_line() {
    let text = "name: x\nsource: postgres://h/db\nengine: turbo\n";
    let e = Task::parse(text, "t.yml").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    let text = "name: x\nsource: postgres://h/db\nsteps:\n  init_data: false\n";
    let e = Task::parse(text, "t.yml").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean `init-data`?"));
    let text = "name: x\nsource: postgres://h/db?sslmode=sure\n";
    let e = Task::parse(text, "t.yml").unwrap_err();
    assert!(e.message.contains("invalid sslmode"), "{e}");
}

const NATIVE: &str = r#"
name: meta-to-test
source: postgres://dbuser_dba@127.0.0.1:5432/meta?sslmode=verify-full&sslrootcert=/etc/ca.pem
target: "host=127.0.0.2 port=5433 dbname=test user=dbuser_dba"
engine: native
objects:
  include: [public, "app.order_*", '"Sales"."Order.Items"']
  exclude: ["public.tmp_*"]
steps: { precheck: true, init-struct: true, init-data: false, cdc: true }
options:
  table_jobs: 8
"#;

#[test]
fn native_file_resolves_defaults() {
    let t = Task::parse(NATIVE, "n.yml").unwrap();
    assert_eq!(t.name, "meta-to-test");
    assert_eq!(t.engine, Engine::Native);
    assert_eq!(t.publication, "pgtransit_meta_to_test");
    assert_eq!(t.slot, "pgtransit_meta_to_test");
    assert_eq!(t.table_jobs, 8);
    assert_eq!(t.index_jobs, 2);
    assert!(!t.steps.init_data);
    assert_eq!(
        t.sub_conn,
        "host=127.0.0.1 port=5432 dbname=meta user=dbuser_dba sslmode=verify-full"
    );
    assert!(t.objects.includes_table("Sales", "Order.Items"));
    assert!(!t.objects.includes_table("public", "tmp_x"));
    assert!(t.objects.includes_table("app", "order_lines"));
    assert!(!t.objects.includes_table("app", "users"));
}

#[test]
fn native_file_round_trips() {
    let t = Task::parse(NATIVE, "n.yml").unwrap();
    let yaml = to_native_yaml(&t);
    let again = Task::parse(&yaml, "written.yml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(again, t, "{yaml}");
    // And a second time gives the same text.
    assert_eq!(to_native_yaml(&again), yaml);
}

#[test]
fn pigsty_task_converts_to_native_without_passwords() {
    let text = PIGSTY_V2.replace(
        "#src_pg: ''",
        "src_pg: 'postgres://dbuser_dba:DBUser.DBA@127.0.0.10/meta'\nsub_conn: 'host=127.0.0.10 dbname=meta user=replicator password=DBUser.Replicator'",
    );
    let t = Task::parse(&text, "x.yml").unwrap();
    let yaml = to_native_yaml(&t);
    assert!(!yaml.contains("DBUser"), "{yaml}");
    let again = Task::parse(&yaml, "w.yml").unwrap();
    assert_eq!(again.publication, "pub_pg_meta_meta");
    assert_eq!(again.context_dir, t.context_dir);
}
