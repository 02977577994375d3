use pgsandbox::Builder;

#[test]
fn starts_two_clusters_with_logical_wal_and_cleans_up() {
    let a = Builder::new().start().expect("start a");
    let b = Builder::new()
        .setting("work_mem", "'7MB'")
        .start()
        .expect("start b");
    assert_ne!(a.port(), b.port());
    assert_eq!(a.psql("postgres", "SHOW wal_level").unwrap(), "logical");
    assert_eq!(b.psql("postgres", "SHOW work_mem").unwrap(), "7MB");
    assert_eq!(
        b.psql("postgres", "SHOW max_replication_slots").unwrap(),
        "32"
    );
    let dir = a.socket_dir();
    assert!(dir.exists());
    drop(a);
    assert!(!dir.exists(), "sandbox folder removed on drop");
}

#[test]
fn password_is_required_over_tcp() {
    let c = Builder::new().password("s3cret pw").start().unwrap();
    assert_eq!(c.password(), Some("s3cret pw"));
    assert!(c.url("postgres").contains("s3cret%20pw"));
    // Over the socket the fixture loader needs no password.
    assert_eq!(c.psql("postgres", "SELECT 1").unwrap(), "1");
    let rules = c
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'scram-sha-256'",
        )
        .unwrap();
    assert_ne!(rules, "0");
}

#[test]
fn hidden_extensions_are_not_available() {
    let c = Builder::new()
        .hide_extensions(&["pg_trgm"])
        .start()
        .unwrap();
    let avail = |name: &str| {
        c.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_available_extensions WHERE name = '{name}'"),
        )
        .unwrap()
    };
    assert_eq!(avail("pg_trgm"), "0");
    assert_eq!(avail("hstore"), "1");
}

#[test]
fn cluster_is_removed_when_a_test_panics() {
    let dir = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let c = Builder::new().start().unwrap();
        *dir.lock().unwrap() = Some(c.socket_dir());
        panic!("boom");
    });
    assert!(result.is_err());
    let dir = dir.lock().unwrap().clone().unwrap();
    assert!(!dir.exists());
}
