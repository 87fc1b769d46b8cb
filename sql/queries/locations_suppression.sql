-- When each kind of alert was last raised for each cart within the suppression window.
select kind, plate, max(created_at) as created_at
from alerts
where created_at >= %(since)s and plate is not null and kind <> 'fugitive_report'
group by kind, plate
