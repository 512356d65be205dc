//! The lease rules one at a time, on the leader's book and a follower's
//! side, with tokio's paused clock.

use std::time::Duration;

use openraft::{CommittedLeaderId, LogId};
use tokio::time::Instant;

use super::*;

const SPAN: Duration = Duration::from_millis(250);

fn at(index: u64) -> Option<LogId<NodeId>> {
    Some(LogId::new(CommittedLeaderId::new(1, 1), index))
}

/// A book in term 1 where follower 2 asked, acknowledged index 5 and was
/// granted a lease.
fn granted() -> Book {
    let book = Book::new(SPAN);
    book.acked(2, 1, at(5), Some(7));
    let (_, grant) = book.sending(2, 1, at(5), true);
    assert_eq!(
        grant,
        Some(Grant { token: 7 }),
        "the grant echoes the token"
    );
    assert_eq!(book.sending(2, 1, at(5), true).1, None, "once");
    book
}

#[tokio::test(start_paused = true)]
async fn a_write_waits_for_every_live_holder_then_for_its_lease_to_run_out() {
    let book = granted();
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    assert!(book.reveal(Some(5), deadline).await, "the holder has 5");
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Index 6 the holder does not have: the write waits out its lease.
    assert!(book.reveal(Some(6), deadline).await);
    assert_eq!(started.elapsed(), SPAN, "waited exactly the lease");
    assert_eq!(book.visible(), Some(6));
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_ends_the_wait_and_asks_for_an_append() {
    let book = std::sync::Arc::new(granted());
    // openraft would say 6 is committed; the holder lacks it, so the
    // append carries 5 and 6 is owed.
    let (commit, _) = book.sending(3, 1, at(6), true);
    assert_eq!(commit, at(5), "the commit is held back");
    let waiter = {
        let book = book.clone();
        tokio::spawn(async move {
            book.reveal(Some(6), Instant::now() + Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(!waiter.is_finished(), "answered before the holder had it");
    assert!(
        book.acked(2, 1, at(6), Some(8)),
        "the held-back commit is owed"
    );
    assert!(waiter.await.expect("joined"));
    let (commit, _) = book.sending(3, 1, at(6), true);
    assert_eq!(commit, at(6));
    assert!(!book.acked(2, 1, at(6), Some(9)), "owed only once");
}

#[tokio::test(start_paused = true)]
async fn no_grant_without_the_leaders_lease_a_token_or_what_was_revealed() {
    let book = Book::new(SPAN);
    book.acked(2, 1, at(5), Some(7));
    assert_eq!(
        book.sending(2, 1, at(5), false).1,
        None,
        "leader not leased"
    );
    book.acked(3, 1, at(5), None);
    assert_eq!(book.sending(3, 1, at(5), true).1, None, "3 did not ask");
    // 9 was revealed; 2 holds only 5.
    assert!(book.reveal(Some(9), Instant::now()).await);
    assert_eq!(book.sending(2, 1, at(9), true).1, None, "2 is behind");
    book.acked(2, 1, at(9), Some(8));
    assert!(book.sending(2, 1, at(9), true).1.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_later_term_clears_the_book_and_an_earlier_one_is_ignored() {
    let book = granted();
    // An answer of an older term changes nothing.
    book.acked(2, 0, at(1), Some(1));
    assert!(!book.reveal(Some(6), Instant::now()).await, "still held");
    book.acked(3, 2, at(1), None);
    assert!(
        book.reveal(Some(6), Instant::now()).await,
        "term 2: no holders"
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_lease_runs_from_its_token_on_its_own_clock() {
    let held = Held::new(Duration::from_millis(200));
    assert_eq!(held.token(), None, "no reads, no token");
    held.reading();
    let token = held.token().expect("a token while reading");
    tokio::time::advance(Duration::from_millis(150)).await;
    held.took(9, 3, Some(4), Some(Grant { token }));
    let (index, until) = held.valid(Some(9), 3).expect("a lease");
    assert_eq!(index, Some(4));
    assert!(
        until <= Instant::now() + Duration::from_millis(50),
        "from the token"
    );
    assert_eq!(held.valid(Some(8), 3), None, "another leader");
    assert_eq!(held.valid(Some(9), 4), None, "another term");
    // Acknowledged later in the term: reads wait for that too.
    held.took(9, 3, Some(6), None);
    assert_eq!(held.valid(Some(9), 3).map(|v| v.0), Some(Some(6)));
    tokio::time::advance(Duration::from_millis(60)).await;
    assert_eq!(held.valid(Some(9), 3), None, "ran out");
    // A token from the future is refused.
    held.took(9, 3, Some(6), Some(Grant { token: u64::MAX }));
    assert_eq!(held.valid(Some(9), 3), None);
    // Another term starts with no lease.
    held.took(
        9,
        3,
        Some(6),
        Some(Grant {
            token: held.token().expect("t"),
        }),
    );
    assert!(held.valid(Some(9), 3).is_some());
    held.took(5, 4, Some(7), None);
    assert_eq!(held.valid(Some(9), 3), None);
    assert_eq!(held.valid(Some(5), 4), None);
}
