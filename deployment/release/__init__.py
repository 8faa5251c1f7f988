"""The release stages: gate (select), the production pointer and its folders, deploy test,
registry, rollback and the continuous-training watch. They may import the core,
data_processing and the server's pointer and bundle reading; never models."""
