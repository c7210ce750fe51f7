//! Where a member-by-member run keeps its temporaries.
//!
//! A launch list's `scratch` outputs are read only by later launches of the list, so one
//! member's temporaries need not live in that member's slice of their buffers: each thread
//! keeps them in one arena that it reuses for every member it runs. The arena stays in the
//! core's cache from member to member, where the members' own slices of 32 ensemble members
//! (a few MB each) would stream in from the shared cache on every step. Temporaries whose
//! lifetimes do not overlap share arena memory, which keeps the arena small.
//!
//! Placement changes where a value lives, never how it is computed: the bits are those of
//! whole-ensemble launches.

use std::ops::Range;

/// Where each buffer of a launch list lives while one member runs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Place {
    /// The member's own slice of the buffer.
    Member,
    /// A range of the thread's arena.
    Arena(Range<usize>),
}

/// A launch as the planner sees it: the buffer slots it reads and the one it writes, and
/// whether that output is a temporary.
pub(crate) struct Use<'a> {
    pub inputs: &'a [usize],
    pub output: usize,
    pub scratch: bool,
}

/// Place `slots` buffers (`lens[s]` values per member) for `launches`, run in order and
/// followed by updates of the slots `updated`: a temporary goes into the arena when its list
/// writes it exactly once, before any launch reads it; its range is free again after its
/// last reader, or never within the list when an update touches it (a gradient that only
/// the optimizer reads, after the launches). Returns the places and the
/// arena's length. A freed range is reused best fit, so ranges only ever hold values of
/// buffers whose lifetimes do not overlap, and a launch's output never shares memory
/// with its inputs (they are still live while it runs).
pub(crate) fn plan(lens: &[usize], launches: &[Use], updated: &[usize]) -> (Vec<Place>, usize) {
    let slots = lens.len();
    let (mut written, mut last, mut eligible) = (vec![false; slots], vec![0; slots], vec![true; slots]);
    for (i, l) in launches.iter().enumerate() {
        for &s in l.inputs {
            if !written[s] {
                eligible[s] = false; // read before its writer (or never written here)
            }
            last[s] = i;
        }
        let o = l.output;
        if written[o] || !l.scratch {
            eligible[o] = false;
        }
        written[o] = true;
        last[o] = last[o].max(i);
    }
    for &s in updated {
        last[s] = usize::MAX;
    }
    let mut places = vec![Place::Member; slots];
    let mut free: Vec<Range<usize>> = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    let mut total = 0;
    for (i, l) in launches.iter().enumerate() {
        // Ranges whose last reader ran before this launch are free for its output.
        live.retain(|&s| {
            if last[s] < i {
                let Place::Arena(r) = &places[s] else { unreachable!("only arena slots are live") };
                free.push(r.clone());
                false
            } else {
                true
            }
        });
        let o = l.output;
        if !eligible[o] || lens[o] == 0 {
            continue;
        }
        let fit = free.iter().enumerate().filter(|(_, r)| r.len() >= lens[o]).min_by_key(|(_, r)| r.len()).map(|(k, _)| k);
        let range = match fit {
            Some(k) => free.swap_remove(k),
            None => {
                total += lens[o];
                total - lens[o]..total
            }
        };
        // The buffer uses the range's start; the whole range comes back when it dies.
        places[o] = Place::Arena(range);
        live.push(o);
    }
    (places, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(p: &Place) -> Range<usize> {
        match p {
            Place::Arena(r) => r.clone(),
            Place::Member => panic!("expected an arena place"),
        }
    }

    #[test]
    fn dead_temporaries_share_memory_and_live_ones_never_do() {
        // 0 is an input; 1 = f(0); 2 = g(1); 3 = h(2, 1) kept; 4 = k(3) temporary read by 5.
        let lens = [8, 8, 8, 8, 4, 8];
        let uses = [
            Use { inputs: &[0], output: 1, scratch: true },
            Use { inputs: &[1], output: 2, scratch: true },
            Use { inputs: &[2, 1], output: 3, scratch: false },
            Use { inputs: &[3], output: 4, scratch: true },
            Use { inputs: &[4], output: 5, scratch: false },
        ];
        let (places, total) = plan(&lens, &uses, &[]);
        assert_eq!(places[0], Place::Member);
        assert_eq!(places[3], Place::Member);
        assert_eq!(places[5], Place::Member);
        let (r1, r2, r4) = (arena(&places[1]), arena(&places[2]), arena(&places[4]));
        assert!(r1.end <= r2.start || r2.end <= r1.start, "1 and 2 are live together");
        // 4 is born after 1 and 2 died: it reuses one of their ranges.
        assert!(r4 == r1 || r4 == r2);
        assert_eq!(total, 16);
    }

    #[test]
    fn a_temporary_read_before_it_is_written_or_written_twice_stays_in_its_buffer() {
        let lens = [4, 4, 4];
        let uses = [
            Use { inputs: &[1], output: 0, scratch: true },
            Use { inputs: &[0], output: 1, scratch: true },
            Use { inputs: &[1], output: 2, scratch: true },
            Use { inputs: &[2], output: 2, scratch: true },
        ];
        let (places, _) = plan(&lens, &uses, &[]);
        assert!(matches!(places[0], Place::Arena(_)));
        assert_eq!(places[1], Place::Member, "read by launch 0 before launch 1 writes it");
        assert_eq!(places[2], Place::Member, "written twice");
    }

    #[test]
    fn a_temporary_an_update_reads_lives_until_the_end() {
        // 1 = f(0) is read by an update after the list; 2 = g(0) and 3 = h(2) are born after
        // 1's last launch and must not take its range; 4 (an update's state) is no output.
        let lens = [4, 4, 4, 4, 4];
        let uses =
            [Use { inputs: &[0], output: 1, scratch: true }, Use { inputs: &[0], output: 2, scratch: true }, Use { inputs: &[2], output: 3, scratch: true }];
        let (places, total) = plan(&lens, &uses, &[1, 4]);
        let (r1, r2, r3) = (arena(&places[1]), arena(&places[2]), arena(&places[3]));
        for other in [&r2, &r3] {
            assert!(r1.end <= other.start || other.end <= r1.start, "{r1:?} is still live: the update reads it");
        }
        assert_eq!(places[4], Place::Member);
        assert_eq!(total, 12);
    }
}
