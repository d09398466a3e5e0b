# table.awk - scripts/bench's table, from its results file (lines: RUN
# SCENARIO KEY VALUE). Figures are medians over the runs; a ratio is
# computed within each run (pipeline and reference measured in the same
# run, on the same server), then its median is taken; peak RSS is the
# highest seen in any run. A second table gives the CPU each part of the
# stack spent per task. Variables: runs, quick, date, cpus, secs, settings.

{
	v[$1, $2, $3] = $4
	if (!($2 SUBSEP $3 in n))
		n[$2, $3] = 0
	list[$2, $3, n[$2, $3]++] = $4
	have[$2] = 1
	if ($1 > maxrun)
		maxrun = $1
}

function median(sc, key,    m, i, j, t, a) {
	m = n[sc, key]
	if (m == 0)
		return ""
	for (i = 0; i < m; i++)
		a[i] = list[sc, key, i] + 0
	for (i = 1; i < m; i++)
		for (j = i; j > 0 && a[j - 1] > a[j]; j--) {
			t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
		}
	return m % 2 ? a[int(m / 2)] : (a[m / 2 - 1] + a[m / 2]) / 2
}

# Median over the runs of num/den, each taken from the same run.
function ratio(sa, ka, sb, kb,    r, m, i, j, t, a) {
	m = 0
	for (r = 1; r <= maxrun; r++)
		if ((r SUBSEP sa SUBSEP ka) in v && (r SUBSEP sb SUBSEP kb) in v && v[r, sb, kb] > 0)
			a[m++] = v[r, sa, ka] / v[r, sb, kb]
	if (m == 0)
		return ""
	for (i = 1; i < m; i++)
		for (j = i; j > 0 && a[j - 1] > a[j]; j--) {
			t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
		}
	return m % 2 ? a[int(m / 2)] : (a[m / 2 - 1] + a[m / 2]) / 2
}

function maxof(sc, key,    i, m, x) {
	x = ""
	for (i = 0; i < n[sc, key]; i++)
		if (x == "" || list[sc, key, i] + 0 > x)
			x = list[sc, key, i] + 0
	return x
}

function mib(sc, key,    x) {
	x = maxof(sc, key)
	return x == "" ? "-" : sprintf("%.1f", x / 1024)
}

function fmt(x, unit, dec) {
	return x == "" ? "-" : sprintf("%." dec "f %s", x, unit)
}

function row(name, pipe, ref, r, target, ok, sc,    w) {
	w = mib(sc, "rss_worker1_kb") " / " mib(sc, "rss_worker2_kb")
	if (sc == "" || !have[sc])
		w = "-"
	printf "%-15s %-18s %-24s %-8s %-12s %-4s %-9s %s\n", name, pipe, ref,
		r == "" ? "-" : sprintf("%.2fx", r), target, ok,
		sc == "" ? "-" : mib(sc, "rss_api_kb"), w
}

# A row of scenario sc's rate against its same-run pgbench/wrk reference "ref".
function against_ref(name, sc, unit, ref_unit, target,    r) {
	r = ratio(sc, "rate", sc, "ref")
	row(name, fmt(median(sc, "rate"), unit, 0), fmt(median(sc, "ref"), ref_unit, 0), r,
		">= " target "x", verdict(r, ">=", target), sc)
}

function verdict(x, op, limit) {
	if (x == "")
		return "-"
	if (op == ">=")
		return x >= limit ? "yes" : "NO"
	return x <= limit ? "yes" : "NO"
}

END {
	printf "bulkreg benchmark, %s, %d CPUs, medians of %d run(s)%s; pgbench/wrk %d s each\n",
		date, cpus, runs, quick ? " (--quick: smoke sizes, not figures)" : "", secs
	if (settings != "")
		printf "settings: %s\n", settings
	printf "%-15s %-18s %-24s %-8s %-12s %-4s %-9s %s\n", "scenario", "pipeline",
		"reference (same run)", "ratio", "target", "met", "API MiB", "worker MiB"
	if (have["spread"])
		against_ref("spread", "spread", "reg/s", "tx/s pgbench", 1.5)
	if (have["hot"])
		against_ref("hot session", "hot", "reg/s", "tx/s pgbench", 1.5)
	if (have["batch"]) {
		r = ratio("spread", "rate", "batch", "ref")
		row("batch50 (ctx)", have["spread"] ? fmt(median("spread", "rate"), "reg/s", 0) : "-",
			fmt(median("batch", "ref"), "reg/s pgbench", 0), r, "context", "-", "")
	}
	if (have["latency"]) {
		x = median("latency", "latency_ms")
		row("latency", fmt(x, "ms", 0), "-", "", "<= 150 ms", verdict(x, "<=", 150),
			"latency")
	}
	if (have["intake"]) {
		r = ratio("intake", "rate", "spread", "rate")
		row("intake", fmt(median("intake", "rate"), "tasks/s", 0),
			have["spread"] ? fmt(median("spread", "rate"), "reg/s spread", 0) : "-", r,
			">= 3x", verdict(r, ">=", 3), "intake")
	}
	if (have["reads"])
		against_ref("reads", "reads", "req/s wrk", "tx/s pgbench", 0.5)
	if (have["growth"]) {
		r = ratio("growth", "rate", "spread", "rate")
		row("growth rate", fmt(median("growth", "rate"), "reg/s", 0),
			have["spread"] ? fmt(median("spread", "rate"), "reg/s spread", 0) : "-", r,
			">= 0.8x", verdict(r, ">=", 0.8), "growth")
		r = ratio("growth", "last_page_ms", "growth", "page0_ms")
		row("growth pages", fmt(median("growth", "last_page_ms"), "ms last", 1),
			fmt(median("growth", "page0_ms"), "ms page 0", 1), r, "<= 1.5x",
			verdict(r, "<=", 1.5), "growth")
		row("growth intake", fmt(median("growth", "intake_s") * 1000, "ms POST", 0),
			fmt(median("growth", "tasks"), "tasks", 0), "", "-", "-", "growth")
	}
	api = 0; wk = 0
	for (k in n) {
		split(k, part, SUBSEP)
		x = maxof(part[1], part[2]) / 1024
		if (part[2] == "rss_api_kb" && x > api)
			api = x
		if (part[2] ~ /^rss_worker/ && x > wk)
			wk = x
	}
	printf "memory: API peak %.1f MiB (target <= 64: %s), worker peak %.1f MiB (target <= 32: %s)" \
		" - VmHWM at the end of each scenario, highest of any run\n", api,
		api <= 64 ? "yes" : "NO", wk, wk <= 32 ? "yes" : "NO"

	printf "\nCPU ms per task (medians)  PostgreSQL  RabbitMQ  API    workers  client  total  => %d-core ceiling\n", cpus
	split("spread hot intake growth", cs, " ")
	for (i = 1; i <= 4; i++)
		cpu_row(cs[i], "tasks")
	cpu_row("reads", "requests")
}

# One row of the CPU table: milliseconds per unit (tasks, or requests for
# reads, where wrk's own CPU is not counted: "client" is then 0).
function cpu_row(sc, unit,    pg, mq, ap, wk, cl, tot, ceiling) {
	if (!have[sc] || !((sc SUBSEP "cpu_pg_ms") in n))
		return
	pg = ratio(sc, "cpu_pg_ms", sc, unit)
	mq = ratio(sc, "cpu_mq_ms", sc, unit)
	ap = ratio(sc, "cpu_api_ms", sc, unit)
	wk = ratio(sc, "cpu_worker_ms", sc, unit)
	cl = ratio(sc, "client_cpu_ms", sc, unit)
	tot = pg + mq + ap + wk + cl
	ceiling = tot ? cpus * 1000 / tot : 0
	printf "  %-24s %-11.3f %-9.3f %-6.3f %-8.3f %-7.3f %-6.3f => %.0f %s/s\n",
		sc (unit == "tasks" ? "" : " (per request)"), pg, mq, ap, wk, cl, tot, ceiling, unit
}
