-- Drop the publication :'pub' on the source.
DROP PUBLICATION IF EXISTS :"pub";
