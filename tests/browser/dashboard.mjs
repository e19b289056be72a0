// Opens the dashboard of a running run in headless Chromium through the URL
// `sluice serve` printed (it carries the token once) and checks the token
// flow — the address bar drops the token, the page keeps it in an HttpOnly,
// SameSite=Strict cookie its script cannot read, and the same page without
// it is answered 401 — and that the page is live: the done counter grows, a
// chart gains points, advice shows; saves a screenshot.
// Usage: node dashboard.mjs PRINTED_URL RUN_ID SCREENSHOT
// (exit 0 and a last line `ok ...` on success).
import { chromium } from "playwright-core";

const [url, runId, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const userDataDir = process.env.CHROMIUM_PROFILE;
const args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"];

const fail = (message) => { console.error("FAIL " + message); process.exit(1); };
const context = await chromium.launchPersistentContext(userDataDir, { executablePath, args, headless: true, viewport: { width: 1400, height: 1000 } });
try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const origin = new URL(url).origin;
  const token = new URL(url).searchParams.get("token");
  if (!token) fail(`the printed URL carries no token: ${url}`);
  const opened = await page.goto(`${url}#run=${encodeURIComponent(runId)}`);
  if (opened.status() !== 200) fail(`the printed URL answered ${opened.status()}`);
  if (page.url().includes(token)) fail(`the address bar still shows the token: ${page.url()}`);
  const cookies = await context.cookies(origin);
  const kept = cookies.find((c) => c.value === token);
  if (!kept || !kept.httpOnly || kept.sameSite !== "Strict") fail(`the token is not in an HttpOnly SameSite=Strict cookie: ${JSON.stringify(cookies)}`);
  if ((await page.evaluate(() => document.cookie)).includes(token)) fail("the page's script can read the token");
  await page.waitForSelector("#run:not([hidden])", { timeout: 20000 });
  const read = async () => ({
    done: Number(await page.textContent("#c-done")),
    points: Number((await page.getAttribute("#ch-calls", "data-points")) || 0),
    state: await page.textContent("#run-state"),
  });
  const start = Date.now();
  let first = await read();
  while (first.points < 1 && Date.now() - start < 20000) { await page.waitForTimeout(100); first = await read(); }
  let later = first;
  while ((later.done <= first.done || later.points < first.points + 2) && Date.now() - start < 30000) {
    await page.waitForTimeout(200);
    later = await read();
  }
  if (later.done <= first.done) fail(`the done counter did not move: ${JSON.stringify([first, later])}`);
  if (later.points < first.points + 2) fail(`the calls chart did not update: ${JSON.stringify([first, later])}`);
  if (later.state !== "running") fail(`state ${later.state}, expected running`);
  const advice = await page.textContent("#advice");
  if (!advice || !advice.trim()) fail("no recommendations shown");
  const runs = await page.$$eval("#runs li", (lis) => lis.map((li) => li.dataset.id));
  if (!runs.includes(runId)) fail(`run list lacks ${runId}: ${runs}`);
  // Let the charts draw a few more points for the picture.
  await page.waitForTimeout(1500);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (errors.length) fail("page errors: " + errors.join("; "));
  // The same page without the token (no cookie): 401, a page asking for it.
  await context.clearCookies();
  const fresh = await context.newPage();
  const refused = await fresh.goto(`${origin}/#run=${encodeURIComponent(runId)}`);
  if (refused.status() !== 401) fail(`without the token the page answered ${refused.status()}`);
  if (!(await fresh.textContent("body")).includes("token")) fail("the 401 page does not ask for the token");
  console.log(`ok done ${first.done} -> ${later.done}, chart points ${first.points} -> ${later.points}, token kept in an HttpOnly cookie, 401 without it, advice: ${advice.trim().slice(0, 120)}`);
} finally {
  await context.close();
}
