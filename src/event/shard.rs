//! Where an event belongs when the state is split by learner (product.md §6): [`Event::shard`]
//! and [`Event::route`], which the pipeline splits submissions by.

use super::{Action, Event, LearnerKey, VisitorKey};

impl Event {
    /// The shard, of `shards`, whose state this event belongs to (product.md §6): its
    /// visitor's for a click that has one, else its learner's (a progress event's, or a tagged
    /// click's), else its own id's. Every copy of an event carries the same learner and visitor,
    /// so it reaches the same shard, and a learner or visitor lives in one shard only: every
    /// figure is the sum of the shards'. The keys are keyed hashes already, so their first word
    /// is uniform.
    pub fn shard(&self, shards: usize) -> usize {
        let word = match self.action {
            Action::Click {
                visitor: Some(VisitorKey(key)),
                ..
            }
            | Action::Click {
                learner: Some(LearnerKey(key)),
                visitor: None,
            }
            | Action::Progress {
                learner: LearnerKey(key),
                ..
            }
            | Action::Names {
                learner: LearnerKey(key),
            } => key[0],
            Action::Click {
                visitor: None,
                learner: None,
            } => self.id.0[0],
        };
        word as usize % shards.max(1)
    }

    /// Where this event goes among `shards` shards: its shard ([`Event::shard`]) with the
    /// event, and, for a tagged click whose learner lives in another shard than its visitor,
    /// that shard with what the click tells the learner's ([`Action::Names`]); the click then
    /// goes to its visitor's shard without its learner. Either way the event is counted once.
    pub fn route(self, shards: usize) -> (usize, Event, Option<(usize, Event)>) {
        let shard = self.shard(shards);
        let Action::Click {
            visitor: Some(visitor),
            learner: Some(learner),
        } = self.action
        else {
            return (shard, self, None);
        };
        let learner_shard = learner.0[0] as usize % shards.max(1);
        if learner_shard == shard {
            return (shard, self, None);
        }
        let names = Event {
            action: Action::Names { learner },
            ..self.clone()
        };
        let click = Event {
            action: Action::Click {
                visitor: Some(visitor),
                learner: None,
            },
            ..self
        };
        (shard, click, Some((learner_shard, names)))
    }
}

/// Where an event belongs among the partitions of a topic whose partitions are the shards
/// (`forward_to_kafka`): the partition Kafka's default partitioner (murmur2, as the Java client
/// and librdkafka's `murmur2_random`) gives its key — its visitor id for a click that has one,
/// else its learner id, else its event id — so that any producer keying messages by learner
/// puts them where they are counted. For a tagged click whose learner id falls in another
/// partition than its visitor id, that partition too (`names`): it is told the campaign the
/// click names ([`Action::Names`]), while the click counts in the visitor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub partition: usize,
    pub names: Option<usize>,
}

impl Placement {
    /// The placement of `event`, parsed from `raw`, among `partitions` partitions.
    pub fn of(event: &Event, raw: &super::RawEvent<'_>, partitions: usize) -> Placement {
        let (key, names) = match event.action {
            Action::Click {
                visitor: Some(_),
                learner,
            } => (raw.visitor_id, learner.map(|_| raw.learner_id)),
            Action::Click {
                visitor: None,
                learner: None,
            } => (raw.event_id, None),
            Action::Click { .. } | Action::Progress { .. } | Action::Names { .. } => {
                (raw.learner_id, None)
            }
        };
        let partition = kafka_partition(key.as_bytes(), partitions);
        Placement {
            partition,
            names: names
                .map(|learner| kafka_partition(learner.as_bytes(), partitions))
                .filter(|names| *names != partition),
        }
    }

    /// The key a producer gives the event's message: what [`Placement::of`] places it by.
    pub fn key<'a>(event: &Event, raw: &super::RawEvent<'a>) -> &'a str {
        match event.action {
            Action::Click {
                visitor: Some(_), ..
            } => raw.visitor_id,
            Action::Click {
                visitor: None,
                learner: None,
            } => raw.event_id,
            Action::Click { .. } | Action::Progress { .. } | Action::Names { .. } => raw.learner_id,
        }
    }

    /// What of `event`, read from partition `partition`, is counted there: the event itself
    /// when it is placed there, or the click without its learner when only the visitor is, or
    /// what it names when only the learner is; `None` when it belongs elsewhere.
    pub fn part(&self, event: Event, partition: usize) -> Option<Event> {
        let Action::Click {
            visitor: Some(visitor),
            learner: Some(learner),
        } = event.action
        else {
            return (self.partition == partition).then_some(event);
        };
        match self.names {
            None => (self.partition == partition).then_some(event),
            Some(_) if self.partition == partition => Some(Event {
                action: Action::Click {
                    visitor: Some(visitor),
                    learner: None,
                },
                ..event
            }),
            Some(names) if names == partition => Some(Event {
                action: Action::Names { learner },
                ..event
            }),
            Some(_) => None,
        }
    }

    /// The partitions the event's message belongs in.
    pub fn partitions(&self) -> impl Iterator<Item = usize> {
        std::iter::once(self.partition).chain(self.names)
    }
}

/// The partition of `partitions` Kafka's default partitioner gives a message keyed `key`:
/// murmur2 with Kafka's seed, the sign bit dropped, modulo the partition count.
pub fn kafka_partition(key: &[u8], partitions: usize) -> usize {
    (murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff) as usize % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::event::{EventKind, EventParser, RawEvent, RawKind, RawTime};

    #[test]
    fn kafka_partition_is_the_java_clients_default_partitioner() {
        // The murmur2 values of Kafka's own partitioner tests (`Utils.murmur2`).
        for (key, murmur) in [
            ("21", -973_932_308_i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            let positive = (murmur.cast_unsigned() & 0x7fff_ffff) as usize;
            for partitions in [1, 4, 6, 64] {
                assert_eq!(
                    kafka_partition(key.as_bytes(), partitions),
                    positive % partitions,
                    "{key}"
                );
            }
        }
    }

    fn raw<'a>(kind: EventKind, learner: &'a str, visitor: &'a str) -> RawEvent<'a> {
        RawEvent {
            event_id: "e-1",
            kind: RawKind::Known(kind),
            campaign: "gendarmerie",
            source: "gendform3",
            learner_id: learner,
            visitor_id: visitor,
            occurred_at: RawTime::At(Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()),
            chapter: None,
        }
    }

    /// A learner id and a visitor id that fall in different partitions of `partitions`.
    fn apart(partitions: usize) -> (String, String) {
        let learner = "learner-1".to_owned();
        let visitor = (0..)
            .map(|n| format!("visitor-{n}"))
            .find(|visitor| {
                kafka_partition(visitor.as_bytes(), partitions)
                    != kafka_partition(learner.as_bytes(), partitions)
            })
            .expect("some visitor falls elsewhere");
        (learner, visitor)
    }

    #[test]
    fn each_part_of_an_event_is_counted_in_one_partition_only() {
        let parser = EventParser::new(12, [3; 32]);
        let now = Utc::now();
        let partitions = 6;
        let (learner, visitor) = apart(partitions);
        // A progress event: its learner's partition.
        let enrolled = raw(EventKind::Enrolled, &learner, "");
        let event = parser.parse(&enrolled, now).expect("valid");
        let placement = Placement::of(&event, &enrolled, partitions);
        let home = kafka_partition(learner.as_bytes(), partitions);
        assert_eq!(
            placement,
            Placement {
                partition: home,
                names: None
            }
        );
        assert_eq!(Placement::key(&event, &enrolled), learner);
        let kept: Vec<usize> = (0..partitions)
            .filter(|p| placement.part(event.clone(), *p).is_some())
            .collect();
        assert_eq!(kept, vec![home]);
        // A tagged click: the click in its visitor's partition, what it names in its
        // learner's, each once.
        let tagged = raw(EventKind::LinkClicked, &learner, &visitor);
        let event = parser.parse(&tagged, now).expect("valid");
        let placement = Placement::of(&event, &tagged, partitions);
        let visitors = kafka_partition(visitor.as_bytes(), partitions);
        assert_eq!(
            placement.partitions().collect::<Vec<_>>(),
            vec![visitors, home]
        );
        let parts: Vec<(usize, Action)> = (0..partitions)
            .filter_map(|p| {
                placement
                    .part(event.clone(), p)
                    .map(|part| (p, part.action))
            })
            .collect();
        let Action::Click {
            visitor: Some(visitor_key),
            learner: Some(learner_key),
        } = event.action
        else {
            panic!("a tagged click");
        };
        assert_eq!(
            parts,
            vec![
                (
                    visitors.min(home),
                    if visitors < home {
                        Action::Click {
                            visitor: Some(visitor_key),
                            learner: None,
                        }
                    } else {
                        Action::Names {
                            learner: learner_key,
                        }
                    }
                ),
                (
                    visitors.max(home),
                    if visitors < home {
                        Action::Names {
                            learner: learner_key,
                        }
                    } else {
                        Action::Click {
                            visitor: Some(visitor_key),
                            learner: None,
                        }
                    }
                ),
            ]
        );
    }
}
