//! The console's HTML. Every value is interpolated through maud, which
//! escapes it: import ids, URLs and errors come from files and messages
//! strangers wrote. Pages carry no inline script or style (the
//! Content-Security-Policy forbids them); `console.js` only swaps in
//! fragments the server rendered.

use maud::{html, Markup, DOCTYPE};
use sluice_messages::api::{
    DeadLettersReply, ImportReply, ImportRow, ReplayReply, StageLag, StoredDeadLetter,
};

/// What a page knows of who is looking.
pub struct Viewer {
    /// Set when the viewer may act: the CSRF token their forms carry.
    pub csrf: Option<String>,
    /// Who they are, when signed in.
    pub name: Option<String>,
    /// Whether a sign-in link is offered.
    pub sign_in: bool,
    /// Signed in with the token (a proxy's user cannot sign out here).
    pub session: bool,
}

pub fn layout(title: &str, viewer: &Viewer, notice: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sluice" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "sluice" }
                    nav {
                        a href="/" { "Imports" }
                        a href="/dead-letters" { "Dead letters" }
                    }
                    div.who {
                        @if let Some(name) = &viewer.name {
                            span #who { (name) }
                            @if let (true, Some(csrf)) = (viewer.session, &viewer.csrf) {
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                        } @else if viewer.sign_in {
                            span.muted { "read-only · " }
                            a #sign-in href="/login" { "Sign in to act" }
                        } @else {
                            span.muted #read-only { "read-only" }
                        }
                    }
                }
                main {
                    @if let Some(notice) = notice {
                        p.notice #notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The imports and stages, refreshed live.
pub fn overview(imports: &[ImportRow], stages: &[StageLag]) -> Markup {
    html! {
        section {
            h2 { "Imports" }
            @if imports.is_empty() {
                p.muted { "No import yet. Publish an accounts CSV's URL: " code { "sluice import URL" } }
            } @else {
                table #imports {
                    thead { tr {
                        th { "Import" } th { "Status" } th { "Accounts" } th.num { "Rows saved" }
                        th.num { "Failed" } th.num { "Dead letters" } th { "Started" } th { "Finished" }
                    } }
                    tbody {
                        @for row in imports {
                            tr data-import=(row.id) {
                                td { a href=(import_href(&row.id)) { (row.id) } }
                                td { (status_badge(&row.status)) }
                                td { (accounts(row)) }
                                td.num { (row.transactions_saved) }
                                td.num { (row.accounts_failed) }
                                td.num { (row.dead_letters) }
                                td { (row.started_at.as_deref().unwrap_or("")) }
                                td { (row.finished_at.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Stages" }
            (stage_table(stages))
        }
    }
}

fn stage_table(stages: &[StageLag]) -> Markup {
    html! {
        table #stages {
            thead { tr {
                th { "Stage" } th { "Stream" } th.num { "Pending" } th.num { "In progress" }
                th.num { "Redelivered" } th.num { "Pulling" }
            } }
            tbody {
                @for stage in stages {
                    tr data-stage=(stage.consumer) {
                        td { (stage.consumer) }
                        td { (stage.stream) }
                        @if let Some(lag) = &stage.lag {
                            td.num.pending { (lag.pending) }
                            td.num { (lag.ack_pending) }
                            td.num { (lag.redelivered) }
                            td.num { (lag.waiting) }
                        } @else {
                            td colspan="4" .muted { "not created yet" }
                        }
                    }
                }
            }
        }
    }
}

/// The page of import `id`. Ids come from messages anyone able to publish
/// could forge (a dead letter's): one that is not a valid id links to the
/// overview rather than anywhere else.
pub fn import_href(id: &str) -> String {
    match sluice_messages::validate_import_id(id) {
        // Letters, digits and `-_:`: nothing to encode.
        Ok(()) => format!("/imports/{id}"),
        Err(_) => "/".to_owned(),
    }
}

fn status_badge(status: &str) -> Markup {
    let class = match status {
        "completed" => "ok",
        "running" => "running",
        "cancelled" => "cancelled",
        _ => "bad",
    };
    html! { span class={ "status " (class) } { (status.replace('_', " ")) } }
}

fn accounts(row: &ImportRow) -> Markup {
    html! {
        (row.accounts_settled) " of "
        @match row.accounts_listed { Some(n) => (n), None => "…" }
    }
}

/// The part of an import's page that changes while it runs.
pub fn import_summary(reply: &ImportReply) -> Markup {
    let row = &reply.import;
    let announced = reply.transactions_announced.max(row.transactions_saved);
    html! {
        dl.summary {
            dt { "Status" } dd #status data-status=(row.status) { (status_badge(&row.status)) }
            dt { "Rows saved" } dd #saved { (row.transactions_saved) }
            dt { "Rows announced" } dd #announced { (announced) }
            dt { "Accounts" } dd #accounts { (accounts(row)) }
            dt { "Accounts failed" } dd { (row.accounts_failed) }
            dt { "Rows rejected" } dd { (row.rows_rejected) }
            dt { "Dead letters" } dd #dead-letters { (row.dead_letters) }
            dt { "Conflicts" } dd { (row.conflicts) }
            dt { "Clashes" } dd { (row.clashes) }
            @if row.spec.is_some() {
                dt { "Updated / refused" } dd { (row.updated) " / " (row.refused) }
            }
            dt { "Files changed" } dd { (row.files_changed) }
            @if let Some(hook) = &row.webhook {
                dt { "Webhook" }
                dd #webhook {
                    (hook.target) ": "
                    @match (&hook.delivered_at, &hook.error) {
                        (Some(at), _) => { "delivered " (at) },
                        (None, Some(why)) => { "not delivered yet (" (hook.attempts) " attempts; " (why) ")" },
                        (None, None) => { "sent when the import ends" },
                    }
                }
            }
        }
        @if row.status == "running" {
            progress #progress max=(announced.max(1)) value=(row.transactions_saved) {}
        }
    }
}

pub fn import_page(
    reply: &ImportReply,
    letters: Result<DeadLettersReply, String>,
    csrf: Option<&str>,
) -> Markup {
    let row = &reply.import;
    let running = row.status == "running";
    html! {
        h1 { "Import " code #import-id { (row.id) } }
        p.muted {
            @if let Some(url) = &row.url { (url) br; }
            @if let Some(spec) = &row.spec { "spec " (spec) br; }
            "started " (row.started_at.as_deref().unwrap_or("?"))
            @if let Some(done) = &row.finished_at { ", finished " (done) }
        }
        @if running {
            div #live data-live={ (import_href(&row.id)) "/events" } { (import_summary(reply)) }
        } @else {
            div #live { (import_summary(reply)) }
        }
        @if running {
            @if let Some(csrf) = csrf {
                form method="post" action={ (import_href(&row.id)) "/cancel" }
                    data-confirm="Cancel this import? Nothing more of it will be saved." {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger #cancel type="submit" { "Cancel import" }
                }
            }
        }
        @if !reply.failures.is_empty() {
            h2 { "Failures" }
            table #failures {
                thead { tr { th { "Message" } th { "Stage" } th { "Kind" } th { "Why" } } }
                tbody { @for f in &reply.failures { tr {
                    td { code { (f.key) } } td { (f.stage) } td { (f.kind) } td.error { (f.error) }
                } } }
            }
        }
        @match &letters {
            Ok(letters) if !letters.dead_letters.is_empty() => {
                h2 { "Dead letters" }
                (letter_table(&letters.dead_letters, csrf))
            },
            Ok(_) => {},
            Err(why) => {
                h2 { "Dead letters" }
                (problem(&format!("The dead letters cannot be read now: {why}")))
            },
        }
        @if !reply.conflicts.is_empty() {
            h2 { "Conflicts" }
            p.muted { "Rows the import listed again: the first in file order was kept." }
            table #conflicts {
                thead { tr { th { "Account" } th { "Id" } th { "Ignored at" } th { "Kept at" } } }
                tbody { @for c in &reply.conflicts { tr {
                    td { (c.account_id) } td { (c.id) }
                    td { (c.url.as_deref().unwrap_or("")) " line " (c.line) }
                    td { (c.kept_url.as_deref().unwrap_or("")) " line " (c.kept_line) }
                } } }
            }
        }
        @if !reply.clashes.is_empty() {
            h2 { "Clashes" }
            p.muted { "Rows another import had saved with another amount: that one was kept." }
            table #clashes {
                thead { tr { th { "Account" } th { "Id" } th { "Here" } th { "Amount" } th { "Kept from" } th { "Kept amount" } } }
                tbody { @for c in &reply.clashes { tr {
                    td { (c.account_id) } td { (c.id) }
                    td { (c.url.as_deref().unwrap_or("")) " line " (c.line) }
                    td.num { (c.amount) }
                    td { a href=(import_href(&c.kept_import_id)) { (c.kept_import_id) } }
                    td.num { (c.kept_amount) }
                } } }
            }
        }
        @if !reply.reports.is_empty() {
            h2 { "Reported rows" }
            table #reports {
                thead { tr { th { "Table" } th { "Kind" } th { "Where" } th { "Key" } } }
                tbody { @for r in &reply.reports { tr {
                    td { (r.table) } td { (r.kind) }
                    td { (r.url.as_deref().unwrap_or("")) " line " (r.line) }
                    td { code { (r.key) } }
                } } }
            }
        }
    }
}

pub fn dead_letters_page(letters: &DeadLettersReply, csrf: Option<&str>) -> Markup {
    html! {
        h1 { "Dead letters" }
        p.muted {
            (letters.in_stream) " in the stream; the newest " (letters.dead_letters.len()) " shown. "
            "A replay publishes the message again on its stage's input and deletes the letter."
        }
        @if letters.dead_letters.is_empty() {
            p #no-letters { "No dead letter." }
        } @else {
            (letter_table(&letters.dead_letters, csrf))
        }
    }
}

fn letter_table(letters: &[StoredDeadLetter], csrf: Option<&str>) -> Markup {
    html! {
        table.letters {
            thead { tr {
                th.num { "Seq" } th { "Time" } th { "Stage" } th { "Kind" } th { "Import" }
                th { "Where" } th { "Why" } th {}
            } }
            tbody { @for l in letters { tr data-sequence=(l.sequence) {
                td.num { (l.sequence) }
                td { (l.time.get(..19).unwrap_or(&l.time)) }
                td { (l.stage) }
                td { (l.kind) }
                td { @if let Some(id) = &l.import_id { a href=(import_href(id)) { (id) } } }
                td { @if let Some(url) = &l.url { (url) @if let Some(line) = l.line { " line " (line) } } }
                td.error { (l.error) }
                td {
                    @if let (true, Some(csrf)) = (l.replayable, csrf) {
                        form method="post" action="/dead-letters/replay" {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="sequence" value=(l.sequence);
                            button.replay type="submit" { "Replay" }
                        }
                    } @else if !l.replayable {
                        span.muted { "report" }
                    }
                }
            } } }
        }
    }
}

/// What a replay did, in words.
pub fn replayed(reply: &ReplayReply) -> String {
    let mut said = format!("Replayed {} dead letter(s)", reply.replayed.len());
    if !reply.skipped.is_empty() {
        said.push_str(&format!("; skipped {} row report(s)", reply.skipped.len()));
    }
    for refusal in &reply.refused {
        said.push_str(&format!(
            "; refused {}: {}",
            refusal.sequence, refusal.reason
        ));
    }
    if !reply.missing.is_empty() {
        said.push_str(&format!("; {} not there any more", reply.missing.len()));
    }
    said.push('.');
    said
}

pub fn sign_in_page(failed: bool) -> Markup {
    html! {
        h1 { "Sign in" }
        @if failed { p.notice.bad #notice role="alert" { "That is not the console's token." } }
        form method="post" action="/login" {
            label for="token" { "Console token (SLUICE_CONSOLE_TOKEN)" }
            input #token type="password" name="token" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    }
}

/// A page for a request that could not be answered.
pub fn problem(what: &str) -> Markup {
    html! { p.notice.bad #problem role="alert" { (what) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_strangers_are_escaped() {
        let letter = StoredDeadLetter {
            sequence: 7,
            time: "2026-12-04T00:00:00Z".into(),
            stage: "fetcher".into(),
            kind: "permanent".into(),
            import_id: Some("abc".into()),
            error: "<script>alert(1)</script> & \"quoted\"".into(),
            subject: "account-updates".into(),
            url: Some("http://host/<img src=x onerror=alert(1)>.csv".into()),
            line: Some(3),
            replayable: true,
        };
        let page = letter_table(&[letter], Some("tok\"en")).into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"));
        assert!(page.contains("value=\"tok&quot;en\""));
    }

    #[test]
    fn a_read_only_viewer_gets_no_action() {
        let letters = DeadLettersReply {
            dead_letters: vec![StoredDeadLetter {
                sequence: 1,
                time: "t".into(),
                stage: "fetcher".into(),
                kind: "permanent".into(),
                import_id: None,
                error: "404".into(),
                subject: "account-updates".into(),
                url: None,
                line: None,
                replayable: true,
            }],
            in_stream: 1,
        };
        assert!(!dead_letters_page(&letters, None)
            .into_string()
            .contains("<form"));
        assert!(dead_letters_page(&letters, Some("t"))
            .into_string()
            .contains("<form"));
    }
}
