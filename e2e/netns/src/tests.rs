use super::*;

#[test]
fn linked_namespaces_reach_each_other_and_vanish_on_drop() {
    if skip_unless_available() {
        return;
    }
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    link(&a, &["10.77.0.1/24"], &b, &["10.77.0.2/24"]).unwrap();
    // Nothing listens in b: a refused connection (not "no route", not a timeout) proves that b's
    // kernel answered over the veth.
    let out = a.command(&["timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/10.77.0.2/9"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Connection refused"), "b did not answer: {stderr}");
    let name = a.name.clone();
    drop(a);
    assert!(!list().contains(&name), "{name} is left after drop");
}

#[test]
fn a_failed_command_quotes_itself_and_its_stderr() {
    let error = run(&["ip", "link", "show", "dev", "no-such-device-here"]).unwrap_err().to_string();
    assert!(error.contains("`ip link show dev no-such-device-here` failed"), "{error}");
    assert!(error.contains("no-such-device-here"), "{error}");
}
