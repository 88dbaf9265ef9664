//! Checks inside one entry.
use super::*;

#[test]
fn scratch() {
    for files in [
        vec![("a.toml", "[[inbound]\nid = 1\n")],
        vec![("a.toml", "[[inbound]]\nid = \"x\"\nplatform = \"shell\"\nplatfrom = 3\n")],
        vec![("a.toml", "[[inbound]]\nid = \"x\"\n")],
        vec![("a.toml", "[delivery]\nlease = \"6Os\"\n")],
        vec![("a.toml", "x = 1979-05-27\n[[inbound]]\nid=1979-05-27\nplatform='shell'\n")],
        vec![("a.toml", "[delivery.retry]\nschedule = []\n")],
        vec![("a.toml", "inbound = 3\n[delivery]\nhttp_timeout = \"2m\"\n")],
    ] {
        println!("{:#?}", problems_in(&files));
    }
}
