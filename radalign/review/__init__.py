"""The radiologist's side, as pure logic (no Kafka, no database, no web server):

- `worklist`: which drafted study to read next (STAT and review-routed first, then the calibrated
  probability of an abnormal film, then waiting time);
- `signoff`: turning an edited draft into the signed `ReportFinal` (edit distance, labels);
- `agreement`: drafted concepts against the signed report's labels, per observation;
- `manifest`: the learning loop's training manifest (`radalign review export-manifest`);
- `store`: PostgreSQL access (images, finals, worklist) used by `services/review`.
"""
