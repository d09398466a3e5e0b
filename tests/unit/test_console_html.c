/*
 * test_console_html.c - the console's HTML builder (api/console_html.h):
 * every "{}" value is escaped for text and quoted attributes alike, the
 * markup of the format is not, NULL writes nothing, and a page over the
 * size bound becomes a 503, never a cut page.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "console_html.h"

static const char *built(struct html *h)
{
	cr_assert_eq(h->st, BR_OK);
	return sb_str(&h->sb);
}

Test(console_html, values_are_escaped_and_markup_is_not)
{
	struct html h;
	html_init(&h);
	html_f(&h, "<a href=\"/x/{}\" title='{}'>{}</a>{}", "a\"b", "it's",
	       "<script>&amp;</script>", NULL);
	cr_assert_str_eq(built(&h), "<a href=\"/x/a&quot;b\" title='it&#39;s'>"
	                            "&lt;script&gt;&amp;amp;&lt;/script&gt;</a>");
	html_free(&h);
}

Test(console_html, placeholders_at_the_edges_and_none)
{
	struct html h;
	html_init(&h);
	html_f(&h, "{}{}", "", "x>");
	html_f(&h, "<p>plain</p>");
	html_f(&h, "{}", "é ü 日本");
	cr_assert_str_eq(built(&h), "x&gt;<p>plain</p>é ü 日本");
	html_free(&h);
}

Test(console_html, an_action_form_carries_its_csrf_token)
{
	struct html h;
	html_init(&h);
	html_action(&h, "/console/jobs/1/retry", "abc\"", "Retry <all>");
	const char *s = built(&h);
	cr_assert(strstr(s, "<form method=\"post\" action=\"/console/jobs/1/retry\""));
	cr_assert(strstr(s, "name=\"csrf\" value=\"abc&quot;\""));
	cr_assert(strstr(s, "<button type=\"submit\">Retry &lt;all&gt;</button>"));
	html_free(&h);
}

Test(console_html, a_page_over_the_bound_is_a_503)
{
	struct html h;
	html_init(&h);
	static char big[1 << 20];
	memset(big, 'a', sizeof(big) - 1);
	for (int i = 0; i < 5; i++)
		html_f(&h, "{}", big);
	cr_assert_neq(h.st, BR_OK);
	struct http_resp resp = {0};
	sb_init(&resp.body, 1 << 16);
	html_send(&h, &resp, 200);
	cr_assert_eq(resp.status, 503);
	cr_assert(strstr(sb_str(&resp.body), "unavailable"));
	sb_free(&resp.body);
	for (int i = 0; i < resp.nheaders; i++) {
		free(resp.headers[i].name);
		free(resp.headers[i].value);
	}
	html_free(&h);
}
