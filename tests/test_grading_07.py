"""Autograding 07-service-mesh: the solution scores full marks, the blank exercise 0, and
each wrong sidecar or TLS context loses exactly the points of the grade cells it breaks.

Every grade cell runs real aiohttp servers on 127.0.0.1 (an upstream, the learner's
sidecar, TLS servers). Each mutant is the solution's answer cell with one behaviour
changed by a targeted text replacement, so the mutants follow the solution as it evolves.
The reference sidecar (``faultline.sidecar.make_sidecar``) passes every behaviour cell:
imported in place of an answer it loses only the provenance point.
"""

from __future__ import annotations

import functools

from tests.grading import (
    GRADING_MARKS,
    Graded,
    GradingChecks,
    Mutant,
    assert_full_marks,
    mutant_of,
    submission_with,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "07-service-mesh"
NOTEBOOK = "07-service-mesh"
GRADE_CELLS = {
    "forwards_requests": 2,
    "retries_on_status": 2,
    "no_retry_for_post": 2,
    "retries_connection_errors": 2,
    "timeout_gives_504": 2,
    "breaker_opens": 2,
    "breaker_counts_failures": 1,
    "breaker_closes_again": 1,
    "request_id": 2,
    "traceparent": 2,
    "mtls_handshake": 2,
    "mtls_refuses_anonymous_client": 2,
    "mtls_refuses_other_ca_client": 1,
    "mtls_client_verifies_server": 1,
    "answers_are_your_own": 1,
}


mutate = functools.partial(mutant_of, ASSIGNMENT, NOTEBOOK)


SIDECAR, SERVER, CLIENT = "make_sidecar", "server_ssl_context", "client_ssl_context"

MUTANTS: dict[str, Mutant] = {
    "drops_query_string": mutate(
        SIDECAR, ("upstream_url + request.raw_path", "upstream_url + request.path"),
        breaks={"forwards_requests"}),
    "retries_every_status": mutate(
        SIDECAR, ("if answer.status not in policy.retry_on_statuses or attempt == retries:",
                  "if answer.status < 500 or attempt == retries:"),
        breaks={"retries_on_status"}),
    "retries_post": mutate(
        SIDECAR, ("retries = policy.max_retries if method in IDEMPOTENT_METHODS else 0",
                  "retries = policy.max_retries"),
        breaks={"no_retry_for_post"}),
    "no_retry_on_connection_error": mutate(
        SIDECAR, ("continue  # refused", "return None  # refused"),
        breaks={"retries_connection_errors"}),
    "no_timeout": mutate(
        SIDECAR, ("asyncio.timeout(policy.timeout)", "asyncio.timeout(None)"),
        breaks={"timeout_gives_504"}),
    "timeout_per_attempt": mutate(
        SIDECAR,
        ("            try:\n                async with session.request(",
         "            try:\n              async with asyncio.timeout(policy.timeout):\n"
         "                async with session.request("),
        ("            except aiohttp.ClientError:",
         "            except (aiohttp.ClientError, TimeoutError):"),
        ("asyncio.timeout(policy.timeout):\n                answer = await",
         "asyncio.timeout(None):\n                answer = await"),
        breaks={"timeout_gives_504"}),
    "breaker_calls_upstream": mutate(
        SIDECAR,
        ('        if now() < breaker["open_until"]:\n'
         '            return web.Response(status=503, text="breaker open: upstream not called")\n',
         '        was_open = now() < breaker["open_until"]\n'),
        ("        return answer\n\n", "        return web.Response(status=503) if was_open "
                                      "else answer\n\n"),
        breaks={"breaker_opens"}),
    "breaker_counts_4xx": mutate(
        SIDECAR, ('breaker["failures"] + 1 if answer.status >= 500 else 0',
                  'breaker["failures"] + 1 if answer.status >= 400 else 0'),
        breaks={"breaker_counts_failures"}),
    "breaker_never_closes": mutate(
        SIDECAR, ('breaker["open_until"] = now() + policy.breaker_open_seconds',
                  'breaker["open_until"] = float("inf")'),
        breaks={"breaker_closes_again"}),
    "replaces_request_id": mutate(
        SIDECAR, ('if "x-request-id" not in headers:', "if True:"),
        breaks={"request_id"}),
    "new_trace_every_hop": mutate(
        SIDECAR, ("span = incoming.child(rng) if incoming else TraceContext.new_root(rng)",
                  "span = TraceContext.new_root(rng)"),
        breaks={"traceparent"}),
    "keeps_callers_parent_id": mutate(
        SIDECAR, ("span = incoming.child(rng) if incoming else TraceContext.new_root(rng)",
                  "span = incoming if incoming else TraceContext.new_root(rng)"),
        breaks={"traceparent"}),
    "server_cert_optional": mutate(
        SERVER, ("ssl.CERT_REQUIRED", "ssl.CERT_OPTIONAL"),
        breaks={"mtls_refuses_anonymous_client"}),
    "server_cert_none": mutate(
        SERVER, ("    context.verify_mode = ssl.CERT_REQUIRED\n", ""),
        breaks={"mtls_refuses_anonymous_client", "mtls_refuses_other_ca_client"}),
    "client_without_certificate": mutate(
        CLIENT, ("    context.load_cert_chain(certfile, keyfile)\n", ""),
        breaks={"mtls_handshake"}),
    "client_trusts_any_server": mutate(
        CLIENT, ("    context.load_verify_locations(cafile=cafile)\n",
                 "    context.check_hostname = False\n    context.verify_mode = ssl.CERT_NONE\n"),
        breaks={"mtls_client_verifies_server"}),
    "client_ignores_host_name": mutate(
        CLIENT, ("    context.load_verify_locations(cafile=cafile)\n",
                 "    context.load_verify_locations(cafile=cafile)\n"
                 "    context.check_hostname = False\n"),
        breaks={"mtls_client_verifies_server"}),
    "reference_sidecar_imported": (
        SIDECAR, "from faultline.sidecar import make_sidecar", {"answers_are_your_own"}),
    "reference_contexts_imported": (
        SERVER, "from faultline.mtls import server_ssl_context", {"answers_are_your_own"}),
    "reference_context_wrapped": (CLIENT, '''
def client_ssl_context(certfile, keyfile, cafile):
    """A client context that presents certfile and only trusts servers from cafile's CA."""
    import faultline.mtls
    return faultline.mtls.client_ssl_context(certfile, keyfile, cafile)
''', {"answers_are_your_own"}),
}


# Another correct sidecar, written the way a learner might: a session per attempt, plain
# dicts for headers, request.path_qs, no backoff, a nonlocal counter for the breaker.
# The tests check the contract, not the solution's shape, so it scores full marks.
LEARNER_STYLE_SIDECAR = r'''
def make_sidecar(upstream_url, policy):
    """An aiohttp app that forwards every request to upstream_url, applying policy."""
    failures = 0
    open_until = 0.0
    rng = random.Random(1)

    async def once(method, url, headers, body):
        async with aiohttp.ClientSession() as session:
            async with session.request(method, url, headers=headers, data=body) as r:
                kept = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
                return r.status, kept, await r.read()

    async def handler(request):
        nonlocal failures, open_until
        loop = asyncio.get_running_loop()
        if loop.time() < open_until:
            return web.Response(status=503)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP | {"x-request-id", "traceparent"}}
        headers["X-Request-ID"] = request.headers.get("X-Request-ID") or str(uuid.uuid4())
        parent = parse_traceparent(request.headers.get("traceparent"))
        ctx = parent.child(rng) if parent is not None else TraceContext.new_root(rng)
        headers["traceparent"] = ctx.to_traceparent()
        body = await request.read()
        tries = 1 + (policy.max_retries if request.method in IDEMPOTENT_METHODS else 0)
        result = None
        try:
            async with asyncio.timeout(policy.timeout):
                for _ in range(tries):
                    try:
                        result = await once(request.method, upstream_url + request.path_qs,
                                            headers, body)
                    except aiohttp.ClientError:
                        result = None
                    else:
                        if result[0] not in policy.retry_on_statuses:
                            break
        except TimeoutError:
            result = (504, {}, b"timeout")
        status, answer_headers, answer_body = result or (502, {}, b"bad gateway")
        if status < 500:
            failures = 0
        else:
            failures += 1
            limit = policy.breaker_consecutive_failures
            if limit is not None and failures >= limit:
                open_until = loop.time() + policy.breaker_open_seconds
                failures = 0
        return web.Response(status=status, headers=answer_headers, body=answer_body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
'''


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS

    @classmethod
    def extra_submissions(cls, solution: dict) -> dict[str, dict]:
        return {"learner_style": submission_with(solution, SIDECAR, LEARNER_STYLE_SIDECAR)}

    def test_a_differently_written_sidecar_scores_full_marks(
            self, graded: dict[str, Graded]) -> None:
        assert_full_marks(self.entry(graded, "learner_style"))
