// Opens the dashboard of a running run in headless Chromium and checks that
// it is live: the done counter grows, a chart gains points, advice shows,
// and saves a screenshot. Usage: node dashboard.mjs URL RUN_ID SCREENSHOT
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
  await page.goto(`${url}/#run=${encodeURIComponent(runId)}`);
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
  console.log(`ok done ${first.done} -> ${later.done}, chart points ${first.points} -> ${later.points}, advice: ${advice.trim().slice(0, 120)}`);
} finally {
  await context.close();
}
