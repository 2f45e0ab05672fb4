//! Edge cases of the stream: line endings, sizes, bytes, interleaving, matching rules.

mod common;
use common::*;
use proptest::prelude::*;
use stacktext::Options;

fn plain() -> Vec<u8> {
    fixture("dtrace/omnios-blog-3.10-jstack-plain.txt")
}

/// Eight one-frame groups: fits the plain OmniOS stack (eight eval calls).
fn eight(tid: Option<u64>) -> protocol::ThreadStack {
    thread(
        tid,
        (0..8)
            .map(|i| frame("/x.py", &format!("f{i}"), i + 1, true))
            .collect(),
    )
}

fn opts(pid: Option<u32>) -> Options {
    Options {
        pid,
        ..Options::default()
    }
}

#[test]
fn crlf_preserved() {
    let input: Vec<u8> = lines(&plain())
        .iter()
        .flat_map(|l| {
            let mut v = l.strip_suffix(b"\n").unwrap_or(l).to_vec();
            v.extend_from_slice(b"\r\n");
            v
        })
        .collect();
    let mut src = FakeSource::with(1, vec![eight(None)]);
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(sum.annotated, 1);
    assert_eq!(without_added(&out, &input), input);
    for l in lines(&out) {
        assert!(l.ends_with(b"\r\n"));
    }
    assert!(String::from_utf8_lossy(&out).contains("+0x57b4\r\n     [ /x.py:1 (f0) ]\r\n"));
}

#[test]
fn empty_input() {
    let (out, sum) = run(b"", &mut FakeSource::default(), &opts(None));
    assert!(out.is_empty());
    assert_eq!(sum.stacks, 0);
}

#[test]
fn one_megabyte_line_and_invalid_utf8() {
    let mut input = vec![b'x'; 1 << 20];
    input.extend_from_slice(b"\n\xff\xfe garbage \xc3\x28\n");
    input.extend_from_slice(&plain());
    input.extend_from_slice(&[b'\xff'; 3 << 20]);
    let mut src = FakeSource::with(1, vec![eight(None)]);
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(sum.annotated, 1);
    assert_eq!(without_added(&out, &input), input);
}

#[test]
fn interleaved_program_output_and_pid_tokens() {
    let mut input = b"pid=77 tid=78\n".to_vec();
    let p = plain();
    let ls = lines(&p);
    // Drop the probe heading (quiet output), put the program's output in the middle.
    input.extend_from_slice(b"\n");
    for (i, l) in ls[1..].iter().enumerate() {
        if i == 5 {
            input.extend_from_slice(b"Function A\n");
        }
        input.extend_from_slice(l);
    }
    let mut src = FakeSource::with(77, vec![eight(Some(5)), eight(Some(78))]);
    let (out, sum) = run(&input, &mut src, &opts(None));
    assert_eq!((sum.stacks, sum.annotated), (1, 1), "{sum}");
    assert_eq!(without_added(&out, &input), input);
    assert_eq!(String::from_utf8_lossy(&out).matches("[ /x.py:").count(), 8);
    assert_eq!(src.asked, vec![77]);
}

#[test]
fn mismatch_is_reported_not_guessed_and_race_leaves_outermost() {
    let input = plain();
    // Six groups for eight eval calls: do not guess.
    let six = thread(
        None,
        (0..6).map(|i| frame("/x.py", "f", i + 1, true)).collect(),
    );
    let mut src = FakeSource::with(1, vec![six]);
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(out, input);
    assert_eq!(sum.unannotated_total(), 1);
    assert!(
        sum.to_string()
            .contains("8 eval frames but 6 Python eval groups"),
        "{sum}"
    );
    // Seven: the outermost eval frame stays bare.
    let seven = thread(
        None,
        (0..7).map(|i| frame("/x.py", "f", i + 1, true)).collect(),
    );
    let mut src = FakeSource::with(1, vec![seven]);
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(sum.race_outermost_bare, 1);
    let o = String::from_utf8_lossy(&out);
    assert_eq!(o.matches("[ /x.py:").count(), 7);
    assert!(o.contains("_PyEval_EvalFrameDefault+0x3ef\n   libpython3.10.so.1.0`_PyEval_Vector+0x45\n   libpython3.10.so.1.0`PyEval_EvalCode"));
    // Two threads that both fit and no tid: ambiguous.
    let mut src = FakeSource::with(1, vec![eight(Some(2)), eight(Some(3))]);
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(out, input);
    assert_eq!(sum.unannotated.get("several Python threads fit"), Some(&1));
    // No pid at all.
    let (_, sum) = run(&input, &mut FakeSource::default(), &opts(None));
    assert_eq!(sum.unannotated.get("no pid known"), Some(&1));
}

#[test]
fn stopped_resumes_after_each_stack() {
    let input = plain();
    let mut src = FakeSource::with(9, vec![eight(None)]);
    let o = Options {
        stopped: true,
        ..opts(Some(9))
    };
    let (_, sum) = run(&input, &mut src, &o);
    assert_eq!(sum.annotated, 1);
    assert_eq!(src.asked, vec![9]);
    assert_eq!(src.resumed, vec![9]);
}

#[test]
fn qualname_option() {
    let mut f = frame("/x.py", "m", 3, true);
    f.qualname = Some("C.m".into());
    let input = b"\n              libpython3.11.so`_PyEval_EvalFrameDefault+0x1\n              python`main\n";
    let mut src = FakeSource::with(1, vec![thread(None, vec![f])]);
    let o = Options {
        qualname: true,
        ..opts(Some(1))
    };
    let (out, _) = run(input, &mut src, &o);
    assert!(String::from_utf8_lossy(&out).contains("\n                [ /x.py:3 (C.m) ]\n"));
}

#[test]
fn pending_stack_cap() {
    let mut input = b"\n".to_vec();
    for _ in 0..100 {
        input.extend_from_slice(b"              libpython3.11.so`_PyEval_EvalFrameDefault+0x1\n");
    }
    let mut src = FakeSource::with(1, vec![eight(None)]);
    let o = Options {
        max_stack_lines: 10,
        ..opts(Some(1))
    };
    let (out, sum) = run(&input, &mut src, &o);
    assert_eq!(out, input);
    assert_eq!(sum.too_long, 1);
}

/// Real lines of each format, cut at every length by the proptest.
const TRUNCATED: &[&[u8]] = &[
    b"#1  0x00007f3a2b4c5d6e in _PyEval_EvalFrameDefault (tstate=0x1, f=0x2) at Python/ceval.c:4181",
    b"#12 0x000055d0c8a01234 in ?? () from /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
    b"Thread 2 (Thread 0x7f3a2b4c5640 (LWP 4242) \"worker\"):",
    b"python3 4242/4243 [001] 1234.567890: cpu-clock:",
    b"\t    7f3a2b4c5d6e _PyEval_EvalFrameDefault+0x57b4 (/usr/lib/libpython3.10.so.1.0)",
    b"              libpython3.10.so.1.0`_PyEval_EvalFrameDefaultReal+0x57b4",
    b"        _PyEval_EvalFrameDefault+22452",
];

#[test]
fn truncated_gdb_frames_pass_through() {
    for line in [&b"#0 \n"[..], b"#1  0x00007f in \n", b"#2\n", b"#3  0x1\n"] {
        let mut src = FakeSource::default();
        let (out, _) = run(line, &mut src, &opts(Some(1)));
        assert_eq!(out, line, "{:?}", String::from_utf8_lossy(line));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn any_bytes_no_panic_and_input_kept(
        chunks in proptest::collection::vec(prop_oneof![
            Just(b"              libpython3.10.so`_PyEval_EvalFrameDefault+0x1\n".to_vec()),
            Just(b"\t7f00 _PyEval_EvalFrameDefault+1 (/lib/x.so)\n".to_vec()),
            Just(b"#1  0x0 in _PyEval_EvalFrameDefault ()\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"               12\n".to_vec()),
            Just(b"@[\n".to_vec()),
            Just(b"]: 3\n".to_vec()),
            Just(b"pid=1 tid=2\n".to_vec()),
            Just(b"pid=3 tid=4\n".to_vec()),
            // aggregation keys before a stack (`@[pid, tid, ustack()]`), and odd ones
            Just(b"        1        2\n".to_vec()),
            Just(b"       -1 99999999999\n".to_vec()),
            Just(b"                [ a.py:1 (f) ]\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
            // every prefix of a real line of each format (a truncated or cut-off record)
            (0usize..TRUNCATED.len(), 0usize..90).prop_map(|(k, n)| {
                let l = TRUNCATED[k];
                let mut v = l[..n.min(l.len())].to_vec();
                v.push(b'\n');
                v
            }),
        ], 0..40),
        max_line in 16usize..200,
        keys in proptest::bool::ANY,
    ) {
        let input: Vec<u8> = chunks.concat();
        let mut src = FakeSource::with(1, vec![thread(Some(2), vec![frame("a.py", "f", 1, true)])]);
        for output in [stacktext::OutputMode::Text, stacktext::OutputMode::Json, stacktext::OutputMode::Folded] {
            let keys = keys.then(|| "pid,tid".parse().unwrap());
            let o = Options { pid: None, keys, max_line, max_stack_lines: 8, output, ..Options::default() };
            let mut out = Vec::new();
            stacktext::annotate(&input[..], &mut out, &mut src, &o).unwrap();
            if output == stacktext::OutputMode::Text {
                // The input's lines, in order, as a subsequence of the output's.
                let mut it = lines(&out).into_iter();
                for l in lines(&input) {
                    prop_assert!(it.any(|m| m == l), "IN {:?}\nOUT {:?}", String::from_utf8_lossy(&input), String::from_utf8_lossy(&out));
                }
                prop_assert!(out.len() >= input.len());
            }
        }
    }
}

/// A read that cannot be shown to be the probe's moment is never printed as a plain line:
/// `[~ ... ]` in text, status `read_later` in JSON, `~` frames in folded output, counted.
#[test]
fn read_later_is_marked_in_every_output() {
    let input = plain();
    let mut src = FakeSource::with(1, vec![eight(None)]);
    src.later = true;
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    let text = String::from_utf8_lossy(&out);
    assert_eq!((sum.annotated, sum.read_later), (1, 1));
    assert!(text.contains("     [~ /x.py:1 (f0) ]\n"), "{text}");
    assert!(!lines(&out).iter().any(|l| is_annotation(l)), "{text}");

    let json = Options {
        output: stacktext::OutputMode::Json,
        ..opts(Some(1))
    };
    let (out, _) = run(&input, &mut src, &json);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["status"], "read_later");
    let folded = Options {
        output: stacktext::OutputMode::Folded,
        ..opts(Some(1))
    };
    let (out, _) = run(&input, &mut src, &folded);
    let f = String::from_utf8_lossy(&out);
    assert!(
        f.contains(";~/x.py:f0:1 1") || f.contains(";~/x.py:f0:1;"),
        "{f}"
    );
    assert!(!f.contains(";/x.py:"), "{f}");

    // held at the probe: plain lines, status annotated
    src.later = false;
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(sum.read_later, 0);
    assert!(String::from_utf8_lossy(&out).contains("     [ /x.py:1 (f0) ]\n"));
}

/// Frames captured at the probe (`pyframes=` tokens, with `pyframes+=` continuations) are
/// resolved by the source instead of a later read: plain lines, even where a later read
/// would be marked; two captures in one record are refused.
#[test]
fn captured_frames_are_exact_and_two_captures_are_refused() {
    let stack = plain();
    let mut input = b"pid=1 tid=7 pyframes=0x10:4:0x1,0x20:8:0x2\npyframes+=0x30:2:0x3\n".to_vec();
    input.extend_from_slice(&stack);
    let mut src = FakeSource {
        later: true, // a live read would be `[~`
        capture: Some(eight(Some(7))),
        ..FakeSource::default()
    };
    let (out, sum) = run(&input, &mut src, &opts(None));
    let text = String::from_utf8_lossy(&out);
    assert_eq!((sum.annotated, sum.read_later), (1, 0), "{text}");
    assert!(text.contains("     [ /x.py:1 (f0) ]\n"), "{text}");
    assert_eq!(
        src.tokens,
        vec![vec![
            "pyframes=0x10:4:0x1,0x20:8:0x2".to_string(),
            "pyframes+=0x30:2:0x3".to_string()
        ]]
    );
    assert!(src.asked.is_empty(), "no live read for a captured stack");

    let mut two = b"pid=1 pyframes=0x10:4:0x1\npid=1 pyframes=0x40:4:0x1\n".to_vec();
    two.extend_from_slice(&stack);
    let (out, sum) = run(&two, &mut src, &opts(None));
    assert_eq!(sum.annotated, 0, "{}", String::from_utf8_lossy(&out));
    assert_eq!(sum.unannotated["record holds two captures"], 1);
}
