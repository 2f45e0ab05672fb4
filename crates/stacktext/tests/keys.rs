//! Which process a stack belongs to, when the text says it in ways that need care:
//! DTrace aggregations keyed by integers and a stack (`@[pid, tid, ustack()]`, named with
//! `--keys`), and records whose `pid=`/`tid=` lines of two probes got interleaved (refused).
//!
//! The stacks are real tool output (tests/fixtures): the DTraceToolkit `py_profile.d`
//! aggregation, whose helper lines say what each stack's Python frames were, rewritten into
//! the layout libdtrace's `dt_print_aggs` gives an entry with integer keys (`" %8d"` per
//! 4-byte key on one line, then the stack, which starts with a newline, then the value), and
//! the OmniOS 3.10 `jstack()`.

mod common;
use common::*;
use stacktext::{KeyColumns, Options, OutputMode};

type Group = Vec<(String, u32, String)>;

fn is_frame(l: &[u8]) -> bool {
    let t = String::from_utf8_lossy(l);
    t.starts_with("              ") && t.contains('`')
}

/// Every stack of an input (a run of frame lines and their `[ ]` lines), as the `[ ]` lines
/// it holds (empty for a stack without Python frames).
fn helper_groups(input: &[u8]) -> Vec<Group> {
    let mut all: Vec<Group> = Vec::new();
    let mut in_stack = false;
    for l in lines(input) {
        if is_frame(l) {
            if !in_stack {
                all.push(Vec::new());
            }
            in_stack = true;
        } else if in_stack && is_annotation(l) {
            all.last_mut().unwrap().push(parse_annotation(l));
        } else {
            in_stack = false;
        }
    }
    all
}

fn strip_annotations(input: &[u8]) -> Vec<u8> {
    lines(input)
        .into_iter()
        .filter(|l| !is_annotation(l))
        .flatten()
        .copied()
        .collect()
}

fn py_frames(g: &Group) -> Vec<protocol::Frame> {
    g.iter().map(|(f, l, n)| frame(f, n, *l, true)).collect()
}

/// What `dt_print_aggs` prints for `@[k1, k2, ..., jstack()]` where the input holds
/// `@[jstack()]`: each entry's key line takes the place of the empty line the stack's leading
/// newline made (the stack's newline now ends the key line). `keys(i)` gives entry i's keys.
fn with_int_keys(input: &[u8], keys: impl Fn(usize) -> Vec<i64>) -> Vec<u8> {
    let ls = lines(input);
    let mut out = Vec::new();
    let mut entry = 0;
    for (i, l) in ls.iter().enumerate() {
        let blank = String::from_utf8_lossy(l).trim().is_empty();
        let next_is_frame = ls.get(i + 1).is_some_and(|n| is_frame(n));
        if blank && next_is_frame {
            for k in keys(entry) {
                out.extend_from_slice(format!(" {k:8}").as_bytes());
            }
            out.push(b'\n');
            entry += 1;
        } else {
            out.extend_from_slice(l);
        }
    }
    out
}

fn opts(keys: Option<&str>) -> Options {
    Options {
        keys: keys.map(|k| k.parse::<KeyColumns>().unwrap()),
        ..Options::default()
    }
}

const PIDS: [u32; 2] = [4242, 5151];

fn pid_of(i: usize) -> u32 {
    PIDS[i % 2]
}

fn tid_of(i: usize) -> u64 {
    1 + (i % 3) as u64
}

/// For every entry i, process `pid_of(i)` answers with three threads: the entry's thread
/// `tid_of(i)` runs the entry's Python frames, the others run another entry's (with the same
/// number of eval calls, so only the tid can pick the right one).
fn source_for(groups: &[Group]) -> FakeSource {
    let mut src = FakeSource::default();
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| !g.is_empty()) {
        let decoy = groups
            .iter()
            .find(|o| o.len() == g.len() && *o != g)
            .unwrap_or(g);
        let threads = (1..=3)
            .map(|t| {
                let frames = if t == tid_of(i) { g } else { decoy };
                thread(Some(t), py_frames(frames))
            })
            .collect();
        src.push(pid_of(i), threads);
    }
    src
}

#[test]
fn aggregation_keyed_pid_tid_stack() {
    let real = fixture("dtrace/dtracetoolkit-py_profile.txt");
    let groups = helper_groups(&real);
    assert!(groups.len() >= 20, "{}", groups.len());
    let with_python = groups.iter().filter(|g| !g.is_empty()).count() as u64;
    let keyed = |i: usize| vec![i64::from(pid_of(i)), tid_of(i) as i64];
    let want = with_int_keys(&real, keyed);
    let input = strip_annotations(&want);
    assert!(String::from_utf8_lossy(&input)
        .contains("\n     4242        1\n              libpython2.4"));

    // --keys pid,tid: every stack read from its own process, its own thread picked
    let mut src = source_for(&groups);
    let (out, sum) = run(&input, &mut src, &opts(Some("pid,tid")));
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want),
        "{sum}"
    );
    assert_eq!(sum.annotated, with_python, "{sum}");
    assert_eq!(sum.unannotated_total(), 0, "{sum}");
    let asked: Vec<u32> = (0..groups.len())
        .filter(|&i| !groups[i].is_empty())
        .map(pid_of)
        .collect();
    assert_eq!(src.asked, asked);

    // JSON: pid and tid from the key, count from the value
    let o = Options {
        output: OutputMode::Json,
        ..opts(Some("pid,tid"))
    };
    let mut src = source_for(&groups);
    let (out, _) = run(&input, &mut src, &o);
    let recs: Vec<serde_json::Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let counts: Vec<u64> = lines(&real)
        .iter()
        .filter_map(|l| String::from_utf8_lossy(l).trim().parse().ok())
        .collect();
    assert_eq!(recs.len(), groups.len());
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r["pid"], u64::from(pid_of(i)), "{r}");
        assert_eq!(r["tid"], tid_of(i), "{r}");
        assert_eq!(r["count"], counts[i], "{r}");
        let status = if groups[i].is_empty() {
            "no_eval_frames"
        } else {
            "annotated"
        };
        assert_eq!(r["status"], status, "{r}");
    }
}

#[test]
fn aggregation_keys_unnamed_or_misnamed_are_refused() {
    let real = fixture("dtrace/dtracetoolkit-py_profile.txt");
    let groups = helper_groups(&real);
    let input = strip_annotations(&with_int_keys(&real, |i| {
        vec![i64::from(pid_of(i)), tid_of(i) as i64]
    }));
    let n = groups.iter().filter(|g| !g.is_empty()).count() as u64;
    for (keys, reason) in [
        // no --keys: which column is the pid is the script's secret
        (None, "aggregation key columns not named (--keys)"),
        // one column named, two printed
        (Some("pid"), "aggregation key columns do not fit --keys"),
        (
            Some("pid,tid,_"),
            "aggregation key columns do not fit --keys",
        ),
    ] {
        let mut src = source_for(&groups);
        let (out, sum) = run(&input, &mut src, &opts(keys));
        assert_eq!(out, input, "{keys:?}: unchanged");
        assert_eq!(sum.unannotated.get(reason), Some(&n), "{keys:?}: {sum}");
        assert_eq!(sum.unannotated_total(), n, "{keys:?}: {sum}");
        assert!(src.asked.is_empty(), "{keys:?}: no process read");
        assert!(sum.details[0].contains("4242 1"), "{}", sum.details[0]);
    }
    // a pid column holding no pid
    let bad = strip_annotations(&with_int_keys(&real, |_| vec![-1, 2]));
    let mut src = source_for(&groups);
    let (_, sum) = run(&bad, &mut src, &opts(Some("pid,tid")));
    assert_eq!(
        sum.unannotated.get("aggregation key column out of range"),
        Some(&n),
        "{sum}"
    );
    assert!(src.asked.is_empty());
}

#[test]
fn aggregation_keyed_pid_only_and_cpu_pid() {
    let real = fixture("dtrace/dtracetoolkit-py_profile.txt");
    let groups = helper_groups(&real);
    // `@[pid, jstack()]`: a lone integer before the stack, like the count line after it
    let want = with_int_keys(&real, |i| vec![i64::from(pid_of(i))]);
    let input = strip_annotations(&want);
    let with_python = groups.iter().filter(|g| !g.is_empty()).count() as u64;
    let mut src = FakeSource::default();
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| !g.is_empty()) {
        src.push(pid_of(i), vec![thread(None, py_frames(g))]);
    }
    let (out, sum) = run(&input, &mut src, &opts(Some("pid")));
    assert_eq!(out, want, "{sum}");
    assert_eq!(sum.annotated, with_python, "{sum}");

    // `@[cpu, pid, jstack()]`, `_` skips the cpu
    let want = with_int_keys(&real, |i| vec![(i % 2) as i64, i64::from(pid_of(i))]);
    let input = strip_annotations(&want);
    let mut src = FakeSource::default();
    for (i, g) in groups.iter().enumerate().filter(|(_, g)| !g.is_empty()) {
        src.push(pid_of(i), vec![thread(None, py_frames(g))]);
    }
    let (out, sum) = run(&input, &mut src, &opts(Some("_,pid")));
    assert_eq!(out, want, "{sum}");
    assert_eq!(sum.annotated, with_python, "{sum}");
}

#[test]
fn quantize_aggregation_with_keys() {
    let real = fixture("dtrace/dtracetoolkit-py_mallocstk-quantize.txt");
    let groups = helper_groups(&real);
    assert!(!groups.is_empty());
    let want = with_int_keys(&real, |_| vec![7001, 1]);
    let input = strip_annotations(&want);
    let mut src = FakeSource::default();
    for g in groups.iter().filter(|g| !g.is_empty()) {
        src.push(7001, vec![thread(Some(1), py_frames(g))]);
    }
    let (out, sum) = run(&input, &mut src, &opts(Some("pid,tid")));
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want),
        "{sum}"
    );
    assert_eq!(sum.unannotated_total(), 0, "{sum}");
    assert_eq!(sum.annotated, sum.with_eval_frames, "{sum}");
    assert!(sum.annotated > 0);
}

// ---- interleaved records ----

/// The OmniOS 3.10 `jstack()` (real), its Python frames from the helper capture.
fn omnios() -> (Vec<u8>, Group) {
    let plain = fixture("dtrace/omnios-blog-3.10-jstack-plain.txt");
    let helper = fixture("dtrace/omnios-blog-3.10-jstack-helper.txt");
    // the record as `dtrace -q` prints printf("pid=..."); jstack(): frames after a newline
    let frames: Vec<u8> = lines(&plain)[1..].concat();
    let g = lines(&helper)
        .into_iter()
        .filter(|l| is_annotation(l))
        .map(parse_annotation)
        .collect();
    (frames, g)
}

fn record(ids: &str, frames: &[u8]) -> Vec<u8> {
    [format!("{ids}\n\n").as_bytes(), frames].concat()
}

#[test]
fn two_pid_lines_before_one_stack_are_refused() {
    let (frames, g) = omnios();
    // CPU 0 printed its pid= line, then CPU 1 its own, then one of the two stacks; the
    // other stack follows with no line of its own (bpftrace's printf and print are separate
    // events; `dtrace` output mixed by two `dtrace` runs into one file looks the same)
    let input = [
        b"pid=246 tid=1\n".to_vec(),
        record("pid=812 tid=3", &frames),
        b"\n".to_vec(),
        frames.clone(),
        b"\n".to_vec(),
        // then a well-formed record
        record("pid=246 tid=1", &frames),
    ]
    .concat();
    let mut src = FakeSource::default();
    src.push(246, vec![thread(Some(1), py_frames(&g))]);
    src.push(812, vec![thread(Some(3), py_frames(&g))]);
    let (out, sum) = run(&input, &mut src, &Options::default());
    assert_eq!(sum.stacks, 3, "{sum}");
    assert_eq!(sum.annotated, 1, "{sum}");
    assert_eq!(
        sum.unannotated.get("record names two processes or threads"),
        Some(&1),
        "{sum}"
    );
    assert_eq!(sum.unannotated.get("no pid known"), Some(&1), "{sum}");
    assert!(
        sum.details
            .iter()
            .any(|d| d.contains("pid 246 and pid 812")),
        "{:?}",
        sum.details
    );
    assert_eq!(src.asked, vec![246], "only the clean record was read");
    // the annotations are under the last stack only
    let text = String::from_utf8_lossy(&out);
    let last = text.rfind("pid=246 tid=1").unwrap();
    assert!(!text[..last].contains("[ "), "{text}");
    assert_eq!(without_added(&out, &input), input);
}

#[test]
fn pid_line_inside_a_stack_is_refused() {
    let (frames, g) = omnios();
    let fl = lines(&frames);
    // the other CPU's printf lands between the frames of this record
    let mixed = [
        b"pid=246 tid=1\n\n".to_vec(),
        fl[..5].concat(),
        b"pid=812 tid=3\n".to_vec(),
        fl[5..].concat(),
    ]
    .concat();
    let mut src = FakeSource::with(246, vec![thread(Some(1), py_frames(&g))]);
    let (out, sum) = run(&mixed, &mut src, &Options::default());
    assert_eq!(out, mixed);
    assert_eq!(
        sum.unannotated.get("record names two processes or threads"),
        Some(&1),
        "{sum}"
    );
    assert!(src.asked.is_empty());

    // the same thread twice (a repeated line) is no conflict
    let twice = [
        b"pid=246 tid=1\n".to_vec(),
        record("pid=246 tid=1", &frames),
    ]
    .concat();
    let (_, sum) = run(&twice, &mut src, &Options::default());
    assert_eq!((sum.annotated, sum.unannotated_total()), (1, 0), "{sum}");

    // two threads of one process: the thread is unknown, refused as well
    let threads = [
        b"pid=246 tid=1\n".to_vec(),
        record("pid=246 tid=2", &frames),
    ]
    .concat();
    let (_, sum) = run(&threads, &mut src, &Options::default());
    assert_eq!(
        sum.unannotated.get("record names two processes or threads"),
        Some(&1),
        "{sum}"
    );
    assert!(
        sum.details[0].contains("tid 1 and tid 2"),
        "{:?}",
        sum.details
    );

    // a key column that disagrees with a pid= line
    let key = [b"pid=246\n     812        1\n".to_vec(), frames.clone()].concat();
    let (_, sum) = run(&key, &mut src, &opts(Some("pid,tid")));
    assert_eq!(
        sum.unannotated.get("record names two processes or threads"),
        Some(&1),
        "{sum}"
    );
}

#[test]
fn interleaved_stopped_records_resume_every_named_process() {
    let (frames, g) = omnios();
    let input = [
        b"pid=246 tid=1\n".to_vec(),
        record("pid=812 tid=3", &frames),
    ]
    .concat();
    let mut src = FakeSource::default();
    src.push(246, vec![thread(Some(1), py_frames(&g))]);
    let o = Options {
        stopped: true,
        ..Options::default()
    };
    let (_, sum) = run(&input, &mut src, &o);
    assert_eq!(sum.unannotated_total(), 1, "{sum}");
    assert!(src.asked.is_empty());
    // both probes stopped their process: neither may stay stopped
    assert_eq!(src.resumed, vec![246, 812]);
}

#[test]
fn swapped_key_columns_are_caught_where_the_system_knows_thread_owners() {
    let (frames, g) = omnios();
    // `@[tid, pid, jstack()]` read with --keys pid,tid: "pid" 812 is a thread of 246
    let input = [b"      812      246\n".to_vec(), frames.clone()].concat();
    let mut src = FakeSource::default();
    src.push(812, vec![thread(Some(246), py_frames(&g))]);
    src.tids.insert(812, 246);
    src.tids.insert(246, 246);
    let (out, sum) = run(&input, &mut src, &opts(Some("pid,tid")));
    assert_eq!(out, input);
    assert_eq!(
        sum.unannotated
            .get("aggregation key columns are not pid and tid"),
        Some(&1),
        "{sum}"
    );
    assert!(src.asked.is_empty());
    // the right order passes the same check
    let input = [b"      246      812\n".to_vec(), frames].concat();
    src.push(246, vec![thread(Some(812), py_frames(&g))]);
    let (_, sum) = run(&input, &mut src, &opts(Some("pid,tid")));
    assert_eq!((sum.annotated, sum.unannotated_total()), (1, 0), "{sum}");
}
