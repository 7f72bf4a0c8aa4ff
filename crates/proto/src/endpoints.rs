//! Which coordinator to try next, when a client knows several.
//!
//! With high availability (docs/SCALING.md) two or three coordinators share
//! one PostgreSQL store and one of them leads; the others are standbys that
//! answer every connection with an `error` of code `not_leader` naming the
//! leader. Workers, the SDK and the CLI accept a comma-separated list
//! (`ws://a:8765,ws://b:8765`) and keep an [`Endpoints`]: try the current
//! one; on a `not_leader` answer go to the leader it names; on a failed
//! connection (or a redirect that led nowhere) move on to the next in the
//! list. A URL that failed since the last good connection is neither
//! followed when named nor tried again while others have not failed: a
//! frozen leader (SIGSTOP) holds its lease, and so the standbys' redirects,
//! until the lease runs out, and each try of it would cost a whole connect
//! timeout; the standbys are asked again instead, until one of them leads. Pure: no IO, no clock; the caller decides when to try.

use std::time::Duration;

/// The coordinator URLs a client knows, and the one to try next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    urls: Vec<String>,
    next: usize,
    /// Where a standby said the leader is: tried before the list.
    redirect: Option<String>,
    /// URLs that failed since the last good connection: not followed when
    /// a standby names them.
    suspect: Vec<String>,
}

/// Why a list of coordinator URLs was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadEndpoints(String);

/// The most URLs a list may hold (a cluster has two or three coordinators).
pub const MAX_ENDPOINTS: usize = 16;

/// [`Endpoints::silence_timeout`] given several coordinators.
pub const HA_SILENCE: Duration = Duration::from_secs(3);

/// [`Endpoints::silence_timeout`] given one coordinator.
pub const LONE_SILENCE: Duration = Duration::from_secs(15);

impl Endpoints {
    /// Reads `ws://a:8765,ws://b:8765` (spaces around commas are ignored).
    /// Every entry must be `ws://` or `wss://`; duplicates are dropped.
    pub fn parse(list: &str) -> Result<Endpoints, BadEndpoints> {
        let mut urls: Vec<String> = Vec::new();
        for url in list.split(',').map(str::trim) {
            if url.is_empty() {
                return Err(BadEndpoints(format!("an empty coordinator URL in `{list}`")));
            }
            if !is_websocket(url) {
                return Err(BadEndpoints(format!(
                    "`{url}` is not a WebSocket URL: expected wss://HOST:PORT (or ws:// on the \
                     coordinator's own machine), its WebSocket port, 8765 by default"
                )));
            }
            if !urls.iter().any(|u| u == url) {
                urls.push(url.to_owned());
            }
        }
        if urls.len() > MAX_ENDPOINTS {
            return Err(BadEndpoints(format!("more than {MAX_ENDPOINTS} coordinator URLs")));
        }
        Ok(Endpoints { urls, next: 0, redirect: None, suspect: Vec::new() })
    }

    /// The URL to try now.
    pub fn current(&self) -> &str {
        match &self.redirect {
            Some(url) => url,
            None => &self.urls[self.next],
        }
    }

    /// Every URL of the list, in order.
    pub fn all(&self) -> &[String] {
        &self.urls
    }

    /// Whether the list has more than one URL (so a failure moves on).
    pub fn is_several(&self) -> bool {
        self.urls.len() > 1
    }

    /// How long a connection may go without a word from the coordinator
    /// before a client gives it up, unless told otherwise: given several
    /// URLs, [`HA_SILENCE`], so that clients leave a frozen leader about
    /// when a standby takes its lease (`--lease-ttl`, 3 s by default);
    /// given one, [`LONE_SILENCE`]: there is nowhere else to go, and a
    /// coordinator stalled on a loaded machine is better waited for.
    pub fn silence_timeout(&self) -> Duration {
        if self.is_several() { HA_SILENCE } else { LONE_SILENCE }
    }

    /// The current URL could not be reached, or stopped answering (or its
    /// redirect led nowhere): the next in the list is tried, and standbys
    /// naming this one are not followed until a connection succeeds.
    pub fn failed(&mut self) {
        let url = self.current().to_owned();
        if !self.suspect.contains(&url) {
            self.suspect.push(url);
        }
        self.move_on();
    }

    /// The next URL of the list that has not failed since the last good
    /// connection (any next one when all have).
    fn move_on(&mut self) {
        if self.redirect.take().is_some() {
            return;
        }
        let n = self.urls.len();
        let fresh = (1..=n)
            .map(|step| (self.next + step) % n)
            .find(|&i| !self.suspect.contains(&self.urls[i]));
        self.next = fresh.unwrap_or((self.next + 1) % n);
    }

    /// The current URL answered `not_leader`, naming `leader` (or nobody,
    /// during an election). A leader named is tried next, unless that is
    /// the URL that just answered (a stale name) or one that failed since
    /// the last good connection (a frozen leader whose lease has not run
    /// out): then the list moves on.
    pub fn not_leader(&mut self, leader: Option<&str>) {
        let answered = self.current().to_owned();
        let followed = leader
            .map(str::trim)
            .filter(|l| is_websocket(l) && *l != answered && !self.suspect.iter().any(|s| s == l));
        match followed {
            Some(leader) => self.redirect = Some(leader.to_owned()),
            None => self.move_on(),
        }
    }

    /// The current URL is the leader: forget the redirect's origin, keep
    /// trying it first after a drop.
    pub fn connected(&mut self) {
        self.suspect.clear();
        if let Some(url) = self.redirect.take() {
            match self.urls.iter().position(|u| *u == url) {
                Some(i) => self.next = i,
                // A leader outside the list stays first until it fails.
                None => self.redirect = Some(url),
            }
        }
    }
}

fn is_websocket(url: &str) -> bool {
    let rest = url.strip_prefix("ws://").or_else(|| url.strip_prefix("wss://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_leave_a_silent_coordinator_sooner_when_another_may_lead() {
        assert_eq!(Endpoints::parse("ws://a:1,ws://b:2").unwrap().silence_timeout(), HA_SILENCE);
        assert_eq!(Endpoints::parse("ws://a:1").unwrap().silence_timeout(), LONE_SILENCE);
        // A duplicate is not another coordinator.
        assert_eq!(Endpoints::parse("ws://a:1,ws://a:1").unwrap().silence_timeout(), LONE_SILENCE);
        assert!(HA_SILENCE < LONE_SILENCE);
    }

    #[test]
    fn lists_parse_and_bad_entries_are_refused() {
        let e = Endpoints::parse("ws://a:1, wss://b:2,ws://a:1").unwrap();
        assert_eq!(e.all(), ["ws://a:1", "wss://b:2"]);
        assert_eq!(e.current(), "ws://a:1");
        assert!(e.is_several());
        for bad in ["", "ws://a:1,", "http://a:1", "ws://", "ws://a b", "tcp://x"] {
            assert!(Endpoints::parse(bad).is_err(), "{bad}");
        }
        let too_many: Vec<String> = (0..=MAX_ENDPOINTS).map(|i| format!("ws://h:{i}")).collect();
        assert!(Endpoints::parse(&too_many.join(",")).is_err());
    }

    #[test]
    fn failures_rotate_and_redirects_go_to_the_leader() {
        let mut e = Endpoints::parse("ws://a:1,ws://b:2,ws://c:3").unwrap();
        e.failed();
        assert_eq!(e.current(), "ws://b:2");
        // b is a standby naming c.
        e.not_leader(Some("ws://c:3"));
        assert_eq!(e.current(), "ws://c:3");
        e.connected();
        assert_eq!(e.current(), "ws://c:3");
        // c dies: the list goes on from c.
        e.failed();
        assert_eq!(e.current(), "ws://a:1");
        // No leader yet (an election): the next one.
        e.not_leader(None);
        assert_eq!(e.current(), "ws://b:2");
        // A standby naming itself (stale) is not followed; c, which failed
        // since the last connection, is skipped.
        e.not_leader(Some("ws://b:2"));
        assert_eq!(e.current(), "ws://a:1");
        // A garbled name is not followed either.
        e.not_leader(Some("javascript:alert(1)"));
        assert_eq!(e.current(), "ws://b:2");
    }

    /// The leader froze with its lease held: the standbys still name it,
    /// and the client asks them again instead of waiting on it, until one
    /// of them leads; once connected, a name is followed again.
    #[test]
    fn a_leader_that_just_failed_is_not_followed_back() {
        let mut e = Endpoints::parse("ws://a:1,ws://b:2,ws://c:3").unwrap();
        e.connected(); // a leads, then freezes.
        e.failed();
        assert_eq!(e.current(), "ws://b:2");
        e.not_leader(Some("ws://a:1")); // b's lease view is stale.
        assert_eq!(e.current(), "ws://c:3");
        e.not_leader(Some("ws://a:1"));
        assert_eq!(e.current(), "ws://b:2", "the list skips a while b and c have not failed");
        e.not_leader(Some("ws://c:3")); // b names the new leader, c.
        assert_eq!(e.current(), "ws://c:3");
        e.connected(); // The failures are forgotten: a may be named again.
        e.failed(); // c fails in turn.
        assert_eq!(e.current(), "ws://a:1");
        e.not_leader(Some("ws://b:2"));
        assert_eq!(e.current(), "ws://b:2");
        e.not_leader(Some("ws://a:1"));
        assert_eq!(e.current(), "ws://a:1");
        // c failed since the last connection: not followed; back to the list.
        e.not_leader(Some("ws://c:3"));
        assert_eq!(e.current(), "ws://a:1");
    }

    #[test]
    fn a_leader_outside_the_list_is_kept_until_it_fails() {
        let mut e = Endpoints::parse("ws://a:1").unwrap();
        e.not_leader(Some("ws://z:9"));
        e.connected();
        assert_eq!(e.current(), "ws://z:9");
        e.failed();
        assert_eq!(e.current(), "ws://a:1");
        // A redirect that fails falls back to where the list was.
        e.not_leader(Some("ws://z:9"));
        e.failed();
        assert_eq!(e.current(), "ws://a:1");
    }
}
