//! The consumer documentation as one self-contained HTML page: the Markdown
//! page rendered by pulldown-cmark, with inline CSS, no script and no
//! external asset. Raw HTML in the Markdown passes only when it is one of the
//! page's own anchors (`<a id="..."></a>`); anything else is shown as text.

use pulldown_cmark::{html, CowStr, Event, Options, Parser};

use crate::config::Config;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
line-height:1.5;margin:0;color:#1a1a1a;background:#fff}\
main{max-width:60rem;margin:0 auto;padding:1rem 1.5rem 4rem}\
h1{font-size:1.8rem}h2{margin-top:2.5rem;border-bottom:1px solid #ddd}\
h3{margin-top:2rem}code{background:#f3f3f3;padding:0 .2em;border-radius:3px}\
table{border-collapse:collapse;width:100%;margin:1rem 0}\
th,td{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{background:#f7f7f7}a{color:#0b5394}:target{background:#fff3c4}";

/// The whole page.
pub fn render(config: &Config) -> String {
    let markdown = super::markdown::render(config);
    let mut body = String::new();
    let parser = Parser::new_ext(&markdown, Options::ENABLE_TABLES).map(only_own_anchors);
    html::push_html(&mut body, parser);
    // The title as escaped text, by the same renderer (`service.name` is
    // validated free of control characters).
    let mut title = String::new();
    html::push_html(
        &mut title,
        std::iter::once(Event::Text(CowStr::from(super::title(config)))),
    );
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"consent-gateway docs\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n\
         </body>\n</html>\n"
    )
}

/// Raw HTML becomes text unless it is one tag of our anchors: `<a id="x">`
/// or `</a>` (pulldown-cmark gives inline HTML one tag at a time).
fn only_own_anchors(event: Event<'_>) -> Event<'_> {
    match event {
        Event::Html(text) | Event::InlineHtml(text) if is_own_anchor_tag(&text) => {
            Event::InlineHtml(text)
        }
        Event::Html(text) | Event::InlineHtml(text) => Event::Text(text),
        other => other,
    }
}

/// `<a id="x">` with `x` made of `a-z`, `0-9`, `_` and `-` only, or `</a>`.
fn is_own_anchor_tag(text: &CowStr<'_>) -> bool {
    let text = text.trim_end();
    text == "</a>"
        || text
            .strip_prefix("<a id=\"")
            .and_then(|rest| rest.strip_suffix("\">"))
            .is_some_and(|id| {
                !id.is_empty()
                    && id.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    })
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_anchors_pass_as_html() {
        assert!(is_own_anchor_tag(&CowStr::from(
            "<a id=\"consent_expired\">"
        )));
        assert!(is_own_anchor_tag(&CowStr::from(
            "<a id=\"route-income\">\n"
        )));
        assert!(is_own_anchor_tag(&CowStr::from("</a>")));
        assert!(!is_own_anchor_tag(&CowStr::from(
            "<a id=\"x\" onclick=\"y\">"
        )));
        assert!(!is_own_anchor_tag(&CowStr::from("<a href=\"https://x\">")));
        assert!(!is_own_anchor_tag(&CowStr::from(
            "<script>alert(1)</script>"
        )));
        assert!(!is_own_anchor_tag(&CowStr::from("<a id=\"\">")));
        let Event::Text(text) = only_own_anchors(Event::Html(CowStr::from("<img src=x>"))) else {
            panic!("raw HTML must become text");
        };
        assert_eq!(&*text, "<img src=x>");
    }
}
