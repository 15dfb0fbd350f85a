//! The pool of the one-statement reads (`db::Reads`): which connections it lends
//! again and which it closes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use conduit::db::{self, Reads};
use sqlx::PgConnection;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};

use crate::support::TestApp;

async fn backend_pid(conn: &mut PgConnection) -> Result<i32, db::Error> {
    Ok(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(conn).await?)
}

/// One read from `reads`: the backend that served it.
async fn read_pid(reads: &Reads) -> i32 {
    reads.run(backend_pid).await.expect("read the backend pid")
}

/// Reads that hold every one of `reads`' `n` connections until a permit of
/// the returned gate is added for each.
pub async fn hold_every_connection(reads: &Reads, n: usize) -> (Arc<Semaphore>, JoinSet<()>) {
    let gate = Arc::new(Semaphore::new(0));
    let (held, mut holding) = mpsc::channel(n);
    let mut readers = JoinSet::new();
    for _ in 0..n {
        let (reads, gate, held) = (reads.clone(), gate.clone(), held.clone());
        readers.spawn(async move {
            let read = reads.run(async |_conn| {
                held.send(()).await.expect("the test waits");
                gate.acquire().await.expect("the gate stays open").forget();
                Ok(())
            });
            read.await.expect("a connection");
        });
    }
    for _ in 0..n {
        holding.recv().await.expect("a reader holds a connection");
    }
    (gate, readers)
}

/// Whether backend `pid` exits within 3 s: a closed connection's backend ends once
/// it has read the goodbye.
async fn backend_ends(app: &TestApp, pid: i32) -> bool {
    for _ in 0..150 {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&app.db)
            .await
            .expect("count backends");
        if open == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn terminate(app: &TestApp, pid: i32) {
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&app.db).await.expect("terminate");
    assert!(ended, "backend {pid} was terminated");
}

#[tokio::test]
async fn a_released_connection_serves_the_next_read() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 2);
    let first = read_pid(&reads).await;
    assert_eq!(reads.idle_count(), 1);
    assert_eq!(read_pid(&reads).await, first);
}

#[tokio::test]
async fn a_read_postgres_refused_keeps_its_connection() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 2);
    let first = read_pid(&reads).await;

    let failed = reads.run(async |conn| Ok(sqlx::query_scalar::<_, i32>("SELECT 1 / 0").fetch_one(conn).await?)).await;
    let Err(db::Error::Sql(err)) = failed else { panic!("division by zero: {failed:?}") };
    assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("22012"));

    assert_eq!(reads.idle_count(), 1);
    assert_eq!(read_pid(&reads).await, first);
}

#[tokio::test]
async fn a_lease_dropped_mid_read_keeps_its_slot_until_the_statement_is_done_then_serves_again() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 1);
    let first = read_pid(&reads).await;

    // A handler cancelled while its statement runs (the client left, or the
    // request timed out) drops its lease with the reply still to come.
    let started = Instant::now();
    let read = reads.run(async |conn| Ok(sqlx::query("SELECT pg_sleep(1)").execute(conn).await?));
    let cancelled = tokio::time::timeout(Duration::from_millis(100), read).await;
    assert!(cancelled.is_err(), "the read was cut short");

    // The pool's one slot is taken until PostgreSQL has finished the abandoned
    // statement; then the same connection, read past that reply, serves again.
    assert_eq!(read_pid(&reads).await, first);
    assert!(started.elapsed() >= Duration::from_millis(900), "the next read waited for the statement");
}

#[tokio::test]
async fn a_read_whose_connection_postgres_ended_mid_statement_runs_again_on_a_new_one() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 2);
    let first = read_pid(&reads).await;

    let read = reads.run(async |conn| {
        Ok(sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid() FROM pg_sleep(1)").fetch_one(conn).await?)
    });
    let (slept, ()) = tokio::join!(read, async {
        // Terminated once it is running the statement, the backend answers FATAL (57P01).
        while !sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep(1)%')",
        )
        .bind(first)
        .fetch_one(&app.db)
        .await
        .expect("look for the statement")
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        terminate(&app, first).await;
    });
    let second = slept.expect("read again on a new connection");
    assert_ne!(second, first);
    assert_eq!(reads.idle_count(), 1, "only the new connection is kept");
    assert_eq!(read_pid(&reads).await, second);
}

#[tokio::test]
async fn a_connection_that_died_while_idle_is_replaced_before_it_is_lent() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 2);
    let first = read_pid(&reads).await;
    terminate(&app, first).await;
    // Idle for a second or more, a connection is pinged before it is lent.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let second = read_pid(&reads).await;
    assert_ne!(second, first);
    assert_eq!(read_pid(&reads).await, second);
}

#[tokio::test]
async fn concurrent_reads_share_at_most_the_configured_connections() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 2);
    let mut reading = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let reads = reads.clone();
        reading.spawn(async move {
            let statement = "SELECT pg_backend_pid() FROM pg_sleep(0.05)";
            let read = reads.run(async |conn| Ok(sqlx::query_scalar::<_, i32>(statement).fetch_one(conn).await?));
            read.await.expect("a read")
        });
    }
    let pids = reading.join_all().await;
    let distinct: std::collections::HashSet<i32> = pids.into_iter().collect();
    assert!(distinct.len() <= 2, "{} connections for a pool of 2", distinct.len());
    assert_eq!(reads.idle_count(), distinct.len());
}

#[tokio::test]
async fn a_read_that_gets_no_connection_in_time_is_a_503_to_retry() {
    let app = TestApp::new().await;
    // Every connection the router's pool may open is lent, and stays lent.
    let (gate, _readers) = hold_every_connection(&app.reads, 5).await;

    let started = Instant::now();
    let response = app.get("/api/tags", None).await;
    response.assert_error(axum::http::StatusCode::SERVICE_UNAVAILABLE, "server");
    assert_eq!(response.error_fields(), ["server"]);
    assert!(started.elapsed() >= Duration::from_secs(4), "answered before the wait ran out: {:?}", started.elapsed());

    // Once a connection comes back, the same read is served.
    gate.add_permits(1);
    assert_eq!(app.get("/api/tags", None).await.status, axum::http::StatusCode::OK);
}

#[tokio::test]
async fn a_closed_pool_closes_its_idle_connections_and_lends_no_more() {
    let app = TestApp::new().await;
    let reads = Reads::new(app.options.clone(), 2);
    let first = read_pid(&reads).await;
    reads.close().await;
    assert_eq!(reads.idle_count(), 0);
    assert!(matches!(reads.run(backend_pid).await, Err(db::Error::Sql(sqlx::Error::PoolClosed))));

    assert!(backend_ends(&app, first).await, "the idle connection was closed");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::new().await;
    let reads = Reads::with_lifetimes(app.options.clone(), 2, Duration::from_millis(200), Duration::from_secs(3600));
    let first = read_pid(&reads).await;
    assert_eq!(reads.idle_count(), 1);

    // Nothing reads: the pool's own task closes the connection.
    assert!(backend_ends(&app, first).await, "the idle connection was closed");
    assert_eq!(reads.idle_count(), 0);
    assert_ne!(read_pid(&reads).await, first, "the next read opened a connection");
}

#[tokio::test]
async fn an_expired_idle_connection_is_not_lent_even_before_the_pool_task_closes_it() {
    let app = TestApp::new().await;
    let idle_timeout = Duration::from_millis(200);
    // Made outside a runtime, the pool has no task of its own: only `acquire`
    // can keep the expired connection from being lent.
    let options = app.options.clone();
    let reads = std::thread::spawn(move || Reads::with_lifetimes(options, 2, idle_timeout, Duration::from_secs(3600)))
        .join()
        .expect("make the pool");
    let first = read_pid(&reads).await;
    tokio::time::sleep(idle_timeout).await;

    assert_eq!(reads.idle_count(), 1, "no task closed it");
    assert_ne!(read_pid(&reads).await, first, "the next read opened a connection");
    assert!(backend_ends(&app, first).await, "the expired connection was closed");
}

#[tokio::test]
async fn a_connection_past_its_lifetime_is_closed_when_it_comes_back_and_while_it_waits() {
    let app = TestApp::new().await;
    let lifetime = Duration::from_millis(300);
    let reads = Reads::with_lifetimes(app.options.clone(), 2, Duration::from_secs(3600), lifetime);

    // A read that ends after the lifetime: its connection is not pooled again.
    let read = reads.run(async |conn| {
        let pid = backend_pid(conn).await;
        tokio::time::sleep(lifetime).await;
        pid
    });
    let first = read.await.expect("read the backend pid");
    assert_eq!(reads.idle_count(), 0);
    assert!(backend_ends(&app, first).await, "the old connection was closed");

    // A connection that outlives it while idle is closed there.
    let second = read_pid(&reads).await;
    assert_ne!(second, first);
    assert!(backend_ends(&app, second).await, "the idle connection was closed at the end of its lifetime");
    assert_eq!(reads.idle_count(), 0);
}

#[tokio::test]
async fn every_read_endpoint_gives_its_connection_back_even_when_it_finds_nothing() {
    let app = TestApp::new().await;
    let token = app.register("reader").await;
    let slug = app.create_article(&token, "Read me", &["pools"]).await;
    let paths = [
        "/api/tags".to_owned(),
        "/api/articles?limit=20".to_owned(),
        "/api/articles/feed".to_owned(),
        format!("/api/articles/{slug}"),
        format!("/api/articles/{slug}/comments"),
        "/api/profiles/reader".to_owned(),
        "/api/user".to_owned(),
        "/api/articles/no-such-article".to_owned(),
        "/api/articles/no-such-article/comments".to_owned(),
        "/api/profiles/nobody".to_owned(),
    ];
    for path in paths {
        let response = app.get(&path, Some(&token)).await;
        assert!(response.status.is_success() || response.status == 404, "{path}: {}", response.text);
        // Reads one after another need one connection, lent and given back each time.
        assert_eq!(app.reads.idle_count(), 1, "after {path}");
    }
}
